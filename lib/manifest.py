# Freeze durable_mqtt into a MicroPython firmware build.
#
# In your board's manifest (ports/esp32 or ports/rp2 builds):
#
#     include("$(MPY_DIR)/../durable_mqtt/lib/manifest.py")   # any path to this file
#
# or include the directory, which picks up this file: include(".../durable_mqtt/lib").
# The modules are frozen as durable_mqtt/*.py (bytecode in flash: importing
# them costs no RAM for code). The version below is the one in
# durable_mqtt/__init__.py; tools/gen_package.py --check keeps them equal.
#
# metadata() may appear once per manifest stack level. If your own top-level
# manifest calls metadata() too and the build stops with "Duplicate call to
# metadata()", use the package line below in your manifest instead of the
# include, with base_path pointing at this directory.
metadata(
    version="0.1.0",
    description="MQTT 3.1.1/5.0 client that keeps its session on flash",
    license="MIT",
)

package("durable_mqtt")
