"""Every MQTT 3.1.1 / 5.0 statement the library cites (an "MQTT-x.y.z-n" in
lib/durable_mqtt) has a test named after it (issue 9: "every rule ... has
a unit test ... named after the statement"), as test_MQTT_x_y_z_n_..., or
test_MQTT_a_b_c_d_and_x_y_z_n_... for a test of two. Host only: reads files."""
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
CITED = re.compile(r"MQTT-(\d+)\.(\d+)\.(\d+)-(\d+)")
NAMED = re.compile(r"def (test_MQTT_[0-9A-Za-z_]+)\(")
# In a test's name: the first statement, then any after "_and_" (whole, or
# its last number only: test_MQTT_4_3_3_9_and_10_...).
FIRST = re.compile(r"^test_MQTT_(\d+)_(\d+)_(\d+)_(\d+)")
MORE = re.compile(r"_and_(\d+)_(\d+)_(\d+)_(\d+)|_and_(\d+)(?=_[a-z])")


def cited():
    found = {}
    for p in sorted((ROOT / "lib" / "durable_mqtt").glob("*.py")):
        for m in CITED.finditer(p.read_text()):
            found.setdefault("MQTT-%s.%s.%s-%s" % m.groups(), p.name)
    return found


def named():
    found = set()
    for p in sorted((ROOT / "tests").glob("test_*.py")):
        for name in NAMED.findall(p.read_text()):
            m = FIRST.match(name)
            if not m:
                continue
            a, b, c, d = m.groups()
            found.add("MQTT-%s.%s.%s-%s" % (a, b, c, d))
            for x in MORE.finditer(name):
                if x.group(1):
                    found.add("MQTT-%s.%s.%s-%s" % x.groups()[:4])
                else:
                    found.add("MQTT-%s.%s.%s-%s" % (a, b, c, x.group(5)))
    return found


def test_the_parser_reads_test_names():
    # (The rule below would pass on a parser that reads nothing.)
    n = named()
    assert {"MQTT-4.4.0-1", "MQTT-4.3.3-10", "MQTT-3.10.1-1", "MQTT-4.7.1-3"} <= n, sorted(n)[:20]
    assert len(cited()) > 40


def test_every_statement_the_library_cites_has_a_test_named_after_it():
    missing = {s: f for s, f in cited().items() if s not in named()}
    assert not missing, "statements cited in lib/ with no test_MQTT_... named after them: %s" % missing
