"""The gateway's token as its config names it (label, module, PIN from the PIN file or the
service's environment): one place, so every user of the token finds the same one."""

from __future__ import annotations

from appliance.config import GatewayConfig
from pki.token import Token, read_pin


def gateway_token(cfg: GatewayConfig) -> Token:
    return Token(cfg.token.label, read_pin(cfg.token.pin_file), cfg.token.module)
