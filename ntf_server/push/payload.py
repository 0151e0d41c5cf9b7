"""APNs payloads for SimpleX apps (§5.5–5.7), pure: JSON bytes in, no I/O, time and nonce injected.

Field names are exactly those today's SimpleX iOS app reads (``notificationData.verification`` /
``checkMessages`` in the background handler, ``notificationData.message`` in the Notification Service
Extension), so the app works unchanged.

Size: Haskell pads every plaintext to 3072 bytes, which makes bodies of ~4.3 KB, above Apple's 4096-byte
limit (§8). The client ignores the pad length, so we pad every push kind to ``PADDED_LEN`` = 2912,
the largest length that keeps the biggest body (an alert carrying the encrypted list) within 4096 bytes.
Every push, whatever its kind (verification, hidden, alert, periodic), therefore carries one ciphertext
of 16 + 2912 bytes, and all pushes of a kind have one body size, so the size reveals nothing about the
content. Bodies of different kinds differ by their fixed JSON keys only: with a 24-byte nonce an alert
is 4094 bytes, a hidden or periodic push 4033, a verification push 4017. If the ≤6 notifications do not
fit the padded length, the oldest are dropped (the last one, the notification that caused the push,
always stays).
"""

from __future__ import annotations

import base64
import functools
import json
import secrets
from collections.abc import Sequence
from typing import Final

from ntf_server.protocol import crypto
from ntf_server.protocol.encoding import SMPServer, b64u_encode
from ntf_server.store.records import MAX_NOTICES, Notice

NONCE_BYTES: Final = 24
PADDED_LEN: Final = 2912
MAX_BODY: Final = 4096
ALERT_TEXT: Final = "Encrypted message or another app event"
ALERT_CATEGORY: Final = "NTF_CAT_CHECK_MESSAGE"


_uri = functools.lru_cache(maxsize=4096)(SMPServer.to_uri)  # a few servers, in every item of every push
_TEXTS: dict[bytes, str] = {}  # by nonce: a notice is in up to 6 pushes of its token (the newest 6)
_TEXTS_MAX: Final = 16384


def notice_text(n: Notice) -> str:
    """``smp://…/<b64u notifierId> <ts> <b64u nonce> <b64u encNMsgMeta>`` (§5.7, ``PNMessageData``)."""
    text = _TEXTS.get(n.nonce)
    if text is None:
        text = (f"{_uri(n.server)}/{b64u_encode(n.notifier_id)} {n.received_at} "
                f"{b64u_encode(n.nonce)} {b64u_encode(n.enc_meta)}")
        if len(_TEXTS) >= _TEXTS_MAX:
            del _TEXTS[next(iter(_TEXTS))]
        _TEXTS[n.nonce] = text
    return text


def encode_pn_messages(items: Sequence[Notice]) -> bytes:
    """Items oldest → newest joined by ``;`` (host lists contain commas)."""
    return ";".join(notice_text(i) for i in items).encode()


def fit_pn_messages(items: Sequence[Notice], limit: int = PADDED_LEN - 2) -> bytes:
    """The longest suffix (newest items, at most 6) whose encoding fits ``limit`` bytes; empty for none."""
    kept = list(items[-MAX_NOTICES:])
    while kept:
        text = encode_pn_messages(kept)
        if len(text) <= limit or len(kept) == 1:
            return text
        kept.pop(0)
    return b""


def _json(obj: object) -> bytes:
    body = json.dumps(obj, separators=(",", ":")).encode()
    if len(body) > MAX_BODY:  # cannot happen with PADDED_LEN; checked so a change of constants is caught
        raise ValueError(f"push body of {len(body)} bytes exceeds {MAX_BODY}")
    return body


def verification_body(dh_secret: bytes, nonce: bytes, reg_code: bytes) -> bytes:
    """Background push carrying the encrypted registration code (§5.5 item 1)."""
    enc = crypto.cb_encrypt(dh_secret, nonce, reg_code, PADDED_LEN)
    return _json(
        {"aps": {"content-available": 1},
         "notificationData": {"nonce": b64u_encode(nonce), "verification": b64u_encode(enc)}}
    )


# A message push's JSON around its two base64url values (which need no escaping), as json.dumps writes the
# dict (tests/push/test_payload.py checks it is byte for byte): one join instead of a JSON encoder per push.
_ALERT: Final = _json({"aps": {"mutable-content": 1, "alert": ALERT_TEXT, "category": ALERT_CATEGORY},
                       "notificationData": {"message": "\0", "nonce": "\0"}}).split(b"\\u0000")
_HIDDEN: Final = _json({"aps": {"content-available": 1},
                        "notificationData": {"checkMessages": True, "message": "\0", "nonce": "\0"}}).split(b"\\u0000")


def _message(template: list[bytes], dh_secret: bytes, nonce: bytes, items: Sequence[Notice]) -> bytes:
    enc = crypto.cb_encrypt(dh_secret, nonce, fit_pn_messages(items), PADDED_LEN)
    body = b"".join((template[0], base64.urlsafe_b64encode(enc), template[1], base64.urlsafe_b64encode(nonce),
                     template[2]))
    if len(body) > MAX_BODY:  # cannot happen with PADDED_LEN; checked so a change of constants is caught
        raise ValueError(f"push body of {len(body)} bytes exceeds {MAX_BODY}")
    return body


def message_alert_body(dh_secret: bytes, nonce: bytes, items: Sequence[Notice]) -> bytes:
    """Mutable-content alert with the encrypted notification list (§5.5 item 2, production shape)."""
    return _message(_ALERT, dh_secret, nonce, items)


def message_background_body(dh_secret: bytes, nonce: bytes, items: Sequence[Notice]) -> bytes:
    """Hidden push: wakes the app to check messages; the encrypted list rides along (README "Push policy")."""
    return _message(_HIDDEN, dh_secret, nonce, items)


def check_messages_body(dh_secret: bytes, nonce: bytes, items: Sequence[Notice] = ()) -> bytes:
    """Periodic background push (§5.5 item 3), in the hidden message push's shape so that it has the same
    size and fields: ``checkMessages: true`` (all today's app reads from it) and the token's newest ≤ 6
    notifications encrypted under ``message`` (an encrypted empty text when it has none yet), where the
    Haskell server sends a tiny unencrypted body that tells anyone who sees it that it is a periodic push."""
    return message_background_body(dh_secret, nonce, items)


def new_nonce() -> bytes:
    """The nonce of one push body: every body is built with a fresh one (the only place nonces are made)."""
    return secrets.token_bytes(NONCE_BYTES)


def message_body(dh_secret: bytes, items: Sequence[Notice], *, hidden: bool, nonce: bytes | None = None) -> bytes:
    """A message push (hidden within the budget, else the production alert) with a fresh nonce."""
    build = message_background_body if hidden else message_alert_body
    return build(dh_secret, nonce or new_nonce(), items)
