"""What a client keeps in the heap: the modules loaded for one call (an
error's words, a connect's dialling, a checkpoint) are unloaded after it
(client.unload), and none of them pulls a module in for good. Run from
source on the unix port; the module set is the same from .mpy."""
from conftest import run_mp

SCRIPT = r"""
import sys
from durable_mqtt import MQTTClient
c = MQTTClient("resident", "127.0.0.1", 1)          # no session file; nothing listens on port 1
try:
    c.connect()
except OSError as x:
    print("refused", x.args[0])
try:
    c.publish(b"t", b"m", False, 3)                    # publish()'s refusal (reasons.py)
except ValueError:
    print("qos refused")
print("MODS", " ".join(sorted(m for m in sys.modules if m.startswith("durable_mqtt"))))
"""


def test_a_failed_connect_and_a_refused_publish_keep_only_the_resident_modules():
    # reasons.py imported records.py (a session file's module) for one
    # constant: a client without a session file that failed one connect
    # kept records.py loaded for good. And a refused publish() left
    # reasons.py loaded until the next connect or subscribe.
    out = run_mp(SCRIPT).stdout
    assert "refused -5" in out and "qos refused" in out, out
    mods = set(out.split("MODS ", 1)[1].split())
    assert mods == {"durable_mqtt", "durable_mqtt.client", "durable_mqtt.codec", "durable_mqtt.errors",
                    "durable_mqtt.session", "durable_mqtt.link", "durable_mqtt.inbound",
                    "durable_mqtt.transport"}, sorted(mods)


TEXTS_SCRIPT = r"""
import sys
import durable_mqtt
from durable_mqtt import codec, errors, ProtocolError
from durable_mqtt.session import Session
got = []
for f, a in ((codec.parse_ack, (b"\x00\x00", 2, False)), (codec.remaining_length, (b"\x30\x80\x00", 0, 3)),
             (Session(False, b"x", 8, 4, 1024, 4, 4, 256).puback, (7, 0))):
    try:
        f(*a)
    except ProtocolError as x:
        got.append(x.args[1])
        got.append(errors.why)
print("GOT", got)
print("LEFT", "durable_mqtt.texts" in sys.modules, hasattr(durable_mqtt, "texts"))
"""


def test_a_protocol_errors_words_are_loaded_for_it_and_dropped_again():
    # The resident decoders raise with a number (errors.fail); the sentence
    # comes from texts.py, which is not kept.
    out = run_mp(TEXTS_SCRIPT).stdout
    assert "GOT ['acknowledgement of 2 bytes, packet id 0', 129, " \
           "'variable byte integer not minimal (MQTT-1.5.5-1)', 129, " \
           "'PUBACK for packet id 7, not awaiting one', 130]" in out, out
    assert "LEFT False False" in out, out


def test_each_numbered_sentence_is_named_beside_its_call_site():
    # A call site passes fail() or said() a number of texts.py; the comment
    # beside it names the sentence, so that the source reads as before.
    # They must agree (a renumbering would otherwise raise the wrong words).
    import ast
    import re
    from pathlib import Path
    lib = Path(__file__).resolve().parent.parent / "lib" / "durable_mqtt"
    texts = ast.literal_eval(re.search(r"TEXTS = (\(.*?\n\))", (lib / "texts.py").read_text(), re.S).group(1))
    seen = set()
    for f in sorted(lib.glob("*.py")):
        for line in f.read_text().splitlines():
            m = re.search(r"\b(?:fail|said)\(\(?(\d+)\b.*#\s*(.*)$", line)
            if m:
                n = int(m.group(1))
                assert texts[n] == m.group(2).strip(), (f.name, line)
                seen.add(n)
    assert seen == set(range(len(texts))), sorted(set(range(len(texts))) - seen)


SAID_SCRIPT = r"""
import gc, sys
from durable_mqtt import codec, errors, ProtocolError
got = again = node = None
# The heap filled with 200-byte blocks, then every other one freed: holes
# of about 200 B, none where texts.py could be compiled or loaded.
gc.collect()
hog = None
try:
    while True:
        hog = [hog, bytearray(200)]
except MemoryError:
    pass
node = hog
while node is not None and node[0] is not None:
    node[0] = node[0][0]
    node = node[0]
gc.collect()
try:
    codec.parse_ack(b"\x00\x00", 2, False)
except ProtocolError as x:
    got = x.args[1]
hog = node = None
gc.collect()
print("GOT", repr(got), errors.why, "durable_mqtt.texts" in sys.modules)
try:
    codec.parse_ack(b"\x00\x00", 2, False)
except ProtocolError as x:
    again = x.args[1]
print("AGAIN", repr(again))
"""


def test_with_no_heap_for_the_words_the_error_names_its_sentence_by_number():
    # errors.said(): a heap with room for the exception but not for
    # texts.py (fragmented: no hole above about 200 B) still raises the
    # ProtocolError, with its reason code, and the number of its sentence
    # in texts.py in place of the words; nothing is left loaded, and once
    # there is heap again the words come back.
    out = run_mp(SAID_SCRIPT, heapsize="300K").stdout
    assert "GOT 'error 11 (texts.py)' 129 False" in out, out
    assert "AGAIN 'acknowledgement of 2 bytes, packet id 0'" in out, out
