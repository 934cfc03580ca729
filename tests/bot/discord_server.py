"""A small Discord-like REST server for the boundary tests (aiohttp, on 127.0.0.1).

simcord replaces discord.py's HTTP client, so it cannot show what the real one does:
its own retries of 500/502/504, its 429 handling, nonces, and errors that reach the
caller as `aiohttp` / `OSError` exceptions. These tests point discord.py's real
`HTTPClient` at this server instead (by overriding `discord.http.Route.BASE`).

The server keeps the state the relay touches (a guild, its channels, forum posts,
messages, archived flags, the active/archived thread listings) and can misbehave on
request: reset the connection before or after acting, answer 5xx after acting,
answer 429 with ``retry_after`` (per route or global), and it refuses edits in
archived threads with Discord's code 50083, as Discord does.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

API = "/api/v10"
BOT_ID = 900_000_000_000_000_001
GUILD_ID = 900_000_000_000_000_002
_ids = itertools.count(910_000_000_000_000_000)
BODY = web.RequestKey("body", object)


def new_id() -> int:
    return next(_ids)


def _now() -> str:
    return datetime.now(UTC).isoformat()


@dataclass
class Fault:
    """One way to misbehave on requests matching `method` and the `path` regex.

    kind: ``reset_before`` / ``reset_after`` (drop the connection without answering,
    before or after changing state), ``error_after`` (act, then answer `status`),
    ``error_before`` (answer `status` without acting), ``rate_limit`` (429 with
    `retry_after`, `global_` for the global limit), ``proxy_rate_limit`` (a 429
    without Discord's ``Via`` header, as a proxy in between might answer).
    """

    method: str
    path: str
    kind: str
    times: int | None = 1
    status: int = 500
    retry_after: float = 0.1
    global_: bool = False
    code: int = 0
    message: str = "Internal error"

    def matches(self, method: str, path: str) -> bool:
        return method == self.method and re.fullmatch(self.path, path) is not None


@dataclass
class Seen:
    method: str
    path: str
    body: dict[str, Any] | None


@dataclass
class FakeDiscord:
    """State plus the aiohttp application that serves it."""

    channels: dict[int, dict[str, Any]] = field(default_factory=dict)
    messages: dict[int, dict[int, dict[str, Any]]] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    requests: list[Seen] = field(default_factory=list)
    nonce_window: float | None = None
    """Seconds a nonce dedupes sends (Discord: a few minutes); ``None``: forever, 0:
    never (a send retried long after its answer was lost)."""
    _nonces: dict[tuple[int, str], tuple[float, dict[str, Any]]] = field(default_factory=dict)

    # --- set-up ----------------------------------------------------------------------

    def add_channel(self, name: str, type_: int = 0, **extra: Any) -> int:
        channel_id = new_id()
        self.channels[channel_id] = {
            "id": str(channel_id),
            "guild_id": str(GUILD_ID),
            "name": name,
            "type": type_,
            "position": len(self.channels),
            "permission_overwrites": [],
            "flags": 0,
            "nsfw": False,
            "parent_id": None,
            "rate_limit_per_user": 0,
            **extra,
        }
        self.messages[channel_id] = {}
        return channel_id

    def add_forum(self, name: str, tags: list[str]) -> tuple[int, dict[str, int]]:
        ids = {tag: new_id() for tag in tags}
        available = [
            {"id": str(i), "name": t, "moderated": False, "emoji_id": None, "emoji_name": None}
            for t, i in ids.items()
        ]
        return self.add_channel(name, 15, available_tags=available), ids

    def fail(self, method: str, path: str, kind: str, **options: Any) -> Fault:
        fault = Fault(method, path, kind, **options)
        self.faults.append(fault)
        return fault

    # --- what the tests look at ------------------------------------------------------

    def threads_of(self, forum_id: int) -> list[dict[str, Any]]:
        return [
            c for c in self.channels.values() if c["type"] == 11 and c["parent_id"] == str(forum_id)
        ]

    def history(self, channel_id: int) -> list[dict[str, Any]]:
        return list(self.messages[channel_id].values())

    def archive(self, thread_id: int, when: str | None = None) -> None:
        meta = self.channels[thread_id]["thread_metadata"]
        meta["archived"] = True
        meta["archive_timestamp"] = when or _now()

    def sent(self, method: str, pattern: str) -> list[Seen]:
        return [r for r in self.requests if r.method == method and re.fullmatch(pattern, r.path)]

    # --- the application -------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._misbehave])
        r = app.router
        r.add_get(API + "/users/@me", self._me)
        r.add_get(API + "/oauth2/applications/@me", self._application)
        r.add_get(API + "/channels/{cid}", self._get_channel)
        r.add_patch(API + "/channels/{cid}", self._edit_channel)
        r.add_delete(API + "/channels/{cid}", self._delete_channel)
        r.add_post(API + "/channels/{cid}/threads", self._create_post)
        r.add_get(API + "/channels/{cid}/threads/archived/public", self._archived)
        r.add_get(API + "/guilds/{gid}/threads/active", self._active)
        r.add_post(API + "/channels/{cid}/messages", self._send)
        r.add_get(API + "/channels/{cid}/messages", self._list)
        r.add_get(API + "/channels/{cid}/messages/{mid}", self._get_message)
        r.add_patch(API + "/channels/{cid}/messages/{mid}", self._edit_message)
        return app

    @web.middleware
    async def _misbehave(self, request: web.Request, handler: Any) -> web.StreamResponse:
        path = request.path.removeprefix(API)
        body = await _body(request)
        self.requests.append(Seen(request.method, path, body))
        request[BODY] = body
        fault = next((f for f in self.faults if f.matches(request.method, path)), None)
        if fault is None:
            return await handler(request)
        if fault.times is not None:
            fault.times -= 1
            if fault.times <= 0:
                self.faults.remove(fault)
        if fault.kind in ("rate_limit", "proxy_rate_limit"):
            payload = {
                "message": "You are being rate limited.",
                "retry_after": fault.retry_after,
                "global": fault.global_,
            }
            headers = {"Retry-After": str(fault.retry_after)}
            if fault.kind == "rate_limit":  # Discord's own answers come through its proxy
                headers["Via"] = "1.1 google"
            if fault.global_:
                headers["X-RateLimit-Global"] = "true"
            return _json(payload, status=429, headers=headers)
        if fault.kind == "error_before":
            return _error(fault.status, fault.code, fault.message)
        if fault.kind == "reset_before":
            _reset(request)
            return web.Response()
        await handler(request)  # acts: the state changes, the answer is lost below
        if fault.kind == "reset_after":
            _reset(request)
            return web.Response()
        return _error(fault.status, fault.code, fault.message)

    async def _me(self, request: web.Request) -> web.Response:
        return _json(_user(BOT_ID, "lab-bot", bot=True))

    async def _application(self, request: web.Request) -> web.Response:
        return _json(
            {
                "id": str(BOT_ID),
                "name": "LoRA Lab",
                "icon": None,
                "description": "",
                "bot_public": True,
                "bot_require_code_grant": False,
                "verify_key": "0" * 64,
                "flags": 0,
                "owner": _user(BOT_ID + 1, "owner"),
            }
        )

    def _channel(self, request: web.Request) -> dict[str, Any] | None:
        return self.channels.get(int(request.match_info["cid"]))

    async def _get_channel(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        if channel is None:
            return _error(404, 10003, "Unknown Channel")
        return _json(channel)

    async def _edit_channel(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        if channel is None:
            return _error(404, 10003, "Unknown Channel")
        body = request[BODY] or {}
        meta = channel.get("thread_metadata")
        if meta is not None and meta["archived"] and body.get("archived") is not False:
            return _error(400, 50083, "Thread is archived")
        if meta is not None and "archived" in body:
            meta["archived"] = bool(body["archived"])
            meta["archive_timestamp"] = _now()
        if "applied_tags" in body:
            channel["applied_tags"] = [str(t) for t in body["applied_tags"]]
        if "name" in body:
            channel["name"] = body["name"]
        return _json(channel)

    async def _delete_channel(self, request: web.Request) -> web.Response:
        channel = self.channels.pop(int(request.match_info["cid"]), None)
        if channel is None:
            return _error(404, 10003, "Unknown Channel")
        self.messages.pop(int(channel["id"]), None)
        return _json(channel)

    async def _create_post(self, request: web.Request) -> web.Response:
        forum = self._channel(request)
        if forum is None or forum["type"] != 15:
            return _error(404, 10003, "Unknown Channel")
        body = request[BODY] or {}
        thread_id = new_id()
        self.channels[thread_id] = {
            "id": str(thread_id),
            "guild_id": str(GUILD_ID),
            "parent_id": forum["id"],
            "owner_id": str(BOT_ID),
            "name": body["name"],
            "type": 11,
            "flags": 0,
            "rate_limit_per_user": 0,
            "message_count": 1,
            "member_count": 1,
            "applied_tags": [str(t) for t in body.get("applied_tags", [])],
            "thread_metadata": {
                "archived": False,
                "locked": False,
                "auto_archive_duration": int(body.get("auto_archive_duration", 4320)),
                "archive_timestamp": _now(),
            },
        }
        self.messages[thread_id] = {}
        message = self._store(thread_id, body.get("message", {}), message_id=thread_id)
        return _json({**self.channels[thread_id], "message": message}, status=201)

    async def _archived(self, request: web.Request) -> web.Response:
        before = request.query.get("before")
        threads = [
            t
            for t in self.threads_of(int(request.match_info["cid"]))
            if t["thread_metadata"]["archived"]
            and (before is None or t["thread_metadata"]["archive_timestamp"] < before)
        ]
        threads.sort(key=lambda t: t["thread_metadata"]["archive_timestamp"], reverse=True)
        limit = int(request.query.get("limit", 50))
        return _json({"threads": threads[:limit], "members": [], "has_more": len(threads) > limit})

    async def _active(self, request: web.Request) -> web.Response:
        threads = [
            c
            for c in self.channels.values()
            if c["type"] == 11 and not c["thread_metadata"]["archived"]
        ]
        return _json({"threads": threads, "members": []})

    async def _send(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        if channel is None:
            return _error(404, 10003, "Unknown Channel")
        meta = channel.get("thread_metadata")
        if meta is not None and meta["archived"]:
            # Discord unarchives an (unlocked) thread when a message is sent in it.
            meta["archived"] = False
        body = request[BODY] or {}
        cid = int(channel["id"])
        nonce = body.get("nonce") if body.get("enforce_nonce") else None
        if nonce and (seen := self._nonces.get((cid, nonce))) is not None:
            at, message = seen
            fresh = self.nonce_window is None or time.monotonic() - at <= self.nonce_window
            if fresh and int(message["id"]) in self.messages[cid]:
                return _json(message)
        message = self._store(cid, body)
        if nonce:
            self._nonces[(cid, nonce)] = (time.monotonic(), message)
        return _json(message)

    async def _list(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        if channel is None:
            return _error(404, 10003, "Unknown Channel")
        newest_first = sorted(
            self.messages[int(channel["id"])].values(), key=lambda m: -int(m["id"])
        )
        return _json(newest_first[: int(request.query.get("limit", 50))])

    async def _get_message(self, request: web.Request) -> web.Response:
        message = self._message(request)
        if message is None:
            return _error(404, 10008, "Unknown Message")
        return _json(message)

    async def _edit_message(self, request: web.Request) -> web.Response:
        message = self._message(request)
        if message is None:
            return _error(404, 10008, "Unknown Message")
        meta = self.channels[int(message["channel_id"])].get("thread_metadata")
        if meta is not None and meta["archived"]:
            return _error(400, 50083, "Thread is archived")
        body = request[BODY] or {}
        for key in ("content", "embeds", "components"):
            if key in body:
                message[key] = body[key]
        message["edited_timestamp"] = _now()
        return _json(message)

    def _message(self, request: web.Request) -> dict[str, Any] | None:
        channel = self._channel(request)
        if channel is None:
            return None
        return self.messages[int(channel["id"])].get(int(request.match_info["mid"]))

    def _store(
        self, channel_id: int, body: dict[str, Any], *, message_id: int | None = None
    ) -> dict[str, Any]:
        message_id = message_id or new_id()
        message = {
            "id": str(message_id),
            "channel_id": str(channel_id),
            "guild_id": str(GUILD_ID),
            "author": _user(BOT_ID, "lab-bot", bot=True),
            "content": body.get("content") or "",
            "timestamp": _now(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": [],
            "embeds": body.get("embeds") or [],
            "components": body.get("components") or [],
            "pinned": False,
            "type": 0,
            "flags": 0,
            "nonce": body.get("nonce"),
        }
        self.messages[channel_id][message_id] = message
        return message


async def _body(request: web.Request) -> dict[str, Any] | None:
    if request.content_type == "application/json":
        return await request.json()
    if request.content_type.startswith("multipart/"):
        form = await request.post()
        payload = form.get("payload_json")
        return json.loads(str(payload)) if payload is not None else {}
    return None


def _reset(request: web.Request) -> None:
    """Drop the connection without an answer (what a reset looks like to the client)."""
    assert request.transport is not None
    request.transport.abort()


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """discord.py parses a body as JSON only for exactly ``application/json``."""
    return web.Response(
        body=json.dumps(data).encode(),
        status=status,
        headers={"Content-Type": "application/json", **(headers or {})},
    )


def _error(status: int, code: int, message: str) -> web.Response:
    return _json({"code": code, "message": message}, status=status)


def _user(user_id: int, name: str, *, bot: bool = False) -> dict[str, Any]:
    return {
        "id": str(user_id),
        "username": name,
        "discriminator": "0",
        "global_name": name,
        "avatar": None,
        "bot": bot,
    }
