# Freeze durable_mqtt into a MicroPython firmware build.
#
# In your board's manifest (ports/esp32 or ports/rp2 builds):
#
#     include("$(MPY_DIR)/../durable_mqtt/lib/manifest.py")   # any path to this file
#
# or include the directory, which picks up this file: include(".../durable_mqtt/lib").
# The modules are frozen as durable_mqtt/*.py (bytecode in flash: importing
# them costs no RAM for code); native.py's two viper functions are compiled
# by the build's mpy-cross for the board's architecture, which the esp32 and
# rp2 ports name (-march=xtensawin, armv6m). A port build that passes no
# -march stops with "error compiling durable_mqtt/native.py: invalid arch":
# give it one, e.g. a unix port build with MPY_CROSS_FLAGS=-march=x64.
# The .pyi stubs are not frozen (package() takes .py files only).
#
# The version below is the one source of the version number:
# tools/gen_package.py copies it into package*.json, and its --check (run by
# tests/test_mip_install.py) demands the same __version__ in
# durable_mqtt/__init__.py and a matching CHANGELOG.md section.
#
# metadata() may appear once per manifest stack level. If your own top-level
# manifest calls metadata() too and the build stops with "Duplicate call to
# metadata()", use the package line below in your manifest instead of the
# include, with base_path pointing at this directory.
metadata(
    version="0.2.0",
    description="MQTT 3.1.1/5.0 client that keeps its session on flash",
    license="MIT",
)

package("durable_mqtt")
