# durable_mqtt: an MQTT 3.1.1 / 5.0 client for MicroPython that keeps its
# session on flash, so a reboot or a Wi-Fi drop loses no message.
from .errors import (MQTTException, ConnectRefused, ProtocolError, PacketTooLarge, Timeout,
                     PeerClosed, NotConnected, QueueFull, StoreFull, SessionError)
from .client import MQTTClient

__version__ = "0.2.0"
