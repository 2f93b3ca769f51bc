"""A Wasp plugin in Python: lets in the client whose username is configured, defers every other one.

componentize-py builds it against the world `authenticator-plugin` of wit/plugin.wit: each exported
interface is a class named after it (`Plugin`, `Authenticator`).
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import types

_username = None


class Plugin(exports.Plugin):
    def init(self, config: str) -> types.Interests:
        global _username
        settings = json.loads(config or "{}")
        unknown = sorted(k for k in settings if k != "username")
        if unknown:
            raise Err(f"plugin config: unknown field `{unknown[0]}`, expected `username`")
        if not isinstance(settings.get("username"), str):
            raise Err("plugin config: missing field `username`")
        _username = settings["username"]
        return types.Interests(hooks=types.Hooks.AUTHENTICATE, publish_filters=[])


class Authenticator(exports.Authenticator):
    def authenticate(self, request: types.AuthRequest) -> types.AuthVerdict:
        if request.client.username == _username:
            return types.AuthVerdict_Allow([])
        return types.AuthVerdict_Defer()
