# Type stubs for durable_mqtt, for editors and type checkers on the host.
# Not installed on boards: mip, `make deploy` and lib/manifest.py take only
# the .py (or .mpy) modules. One stub per public module: client.pyi
# (MQTTClient), errors.pyi, robust.pyi (RobustClient), aio.pyi
# (AsyncClient), filelog.pyi (FileLog); docs/api.md describes every name.
from .client import MQTTClient as MQTTClient
from .errors import ConnectRefused as ConnectRefused
from .errors import MQTTException as MQTTException
from .errors import NotConnected as NotConnected
from .errors import PacketTooLarge as PacketTooLarge
from .errors import PeerClosed as PeerClosed
from .errors import ProtocolError as ProtocolError
from .errors import QueueFull as QueueFull
from .errors import SessionError as SessionError
from .errors import StoreFull as StoreFull
from .errors import Timeout as Timeout

__version__: str
