"""Messages as HTML, the way Discord shows them: author, text (a little Markdown),
embeds with their fields and images, attachments, and buttons. Pure functions over
`discord.Message` objects and plain dicts, so the report needs no browser or server."""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from typing import Any

import discord

CSS = """
body { background:#313338; color:#dbdee1; margin:0; padding:16px 24px;
       font:15px/1.4 'gg sans','Noto Sans',Helvetica,Arial,sans-serif; }
a { color:#00a8fc; } h1 { font-size:20px; color:#f2f3f5; } h2 { font-size:16px; color:#f2f3f5; }
nav a { display:block; margin:2px 0; }
.msg { display:flex; gap:12px; padding:6px 0; max-width:760px; }
.avatar { width:40px; height:40px; border-radius:50%; background:#5865f2; color:#fff; flex:none;
          display:flex; align-items:center; justify-content:center; font-weight:600; }
.avatar.bot { background:#23a55a; }
.author { color:#f2f3f5; font-weight:600; } .tag { background:#5865f2; color:#fff; font-size:10px;
          border-radius:3px; padding:0 4px; margin-left:4px; vertical-align:middle; }
.meta { color:#949ba4; font-size:12px; margin-left:6px; }
.eph { color:#949ba4; font-size:12px; margin-top:2px; }
.content { white-space:normal; word-wrap:break-word; }
code { background:#2b2d31; border-radius:3px; padding:0 3px; font-size:13px; }
.embed { background:#2b2d31; border-left:4px solid #5865f2; border-radius:4px; padding:8px 12px;
         margin-top:6px; max-width:520px; }
.embed .title { color:#f2f3f5; font-weight:600; margin-bottom:4px; }
.fields { display:flex; flex-wrap:wrap; gap:6px 16px; margin-top:6px; }
.field { min-width:140px; } .field.block { flex-basis:100%; }
.field .name { color:#f2f3f5; font-weight:600; font-size:13px; } .footer { color:#949ba4;
         font-size:12px; margin-top:6px; }
img.media { max-width:480px; max-height:360px; border-radius:4px; margin-top:6px; display:block;
            image-rendering:pixelated; }
.file { background:#2b2d31; border:1px solid #1e1f22; border-radius:4px; padding:8px 12px;
        margin-top:6px; display:inline-block; }
.buttons { margin-top:6px; display:flex; gap:8px; flex-wrap:wrap; }
.btn { border-radius:3px; padding:4px 14px; color:#fff; font-size:14px; background:#4e5058; }
.btn.primary { background:#5865f2; } .btn.success { background:#248046; }
.btn.danger { background:#da373c; } .btn.disabled { opacity:.5; }
.step { border-top:1px solid #3f4147; padding:8px 0; max-width:760px; }
.action { color:#f0b232; }
"""

_STYLES = {
    discord.ButtonStyle.primary: "primary",
    discord.ButtonStyle.success: "success",
    discord.ButtonStyle.danger: "danger",
}


def page(title: str, body: str) -> str:
    """A complete HTML page."""
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{CSS}</style></head><body>"
        + (f"<h1>{html.escape(title)}</h1>" if title else "")
        + f"{body}</body></html>"
    )


def markdown(text: str, names: Callable[[str, int], str] = lambda kind, i: str(i)) -> str:
    """Discord's everyday Markdown: **bold**, *italic*, `code`, mentions, line breaks."""
    out = html.escape(text)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    out = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", out)
    out = re.sub(r"(?<![*\w])\*(?!\s)(.+?)(?<!\s)\*(?!\w)", r"<i>\1</i>", out)
    out = re.sub(r"&lt;#(\d+)&gt;", lambda m: f"<b>#{names('channel', int(m[1]))}</b>", out)
    out = re.sub(r"&lt;@!?(\d+)&gt;", lambda m: f"<b>@{names('user', int(m[1]))}</b>", out)
    out = re.sub(r"&lt;@&amp;(\d+)&gt;", lambda m: f"<b>@{names('role', int(m[1]))}</b>", out)
    return out.replace("\n", "<br>")


def embed_html(
    embed: dict[str, Any], image_src: Callable[[str], str | None], md: Callable[[str], str]
) -> str:
    """One embed (as `discord.Embed.to_dict()` gives it)."""
    colour = embed.get("color")
    style = f" style='border-left-color:#{colour:06x}'" if isinstance(colour, int) else ""
    parts = [f"<div class='embed'{style}>"]
    if embed.get("title"):
        parts.append(f"<div class='title'>{md(embed['title'])}</div>")
    if embed.get("description"):
        parts.append(f"<div>{md(embed['description'])}</div>")
    fields = embed.get("fields") or []
    if fields:
        parts.append("<div class='fields'>")
        for field in fields:
            block = "" if field.get("inline") else " block"
            parts.append(
                f"<div class='field{block}'><div class='name'>{md(field.get('name', ''))}</div>"
                f"<div>{md(str(field.get('value', '')))}</div></div>"
            )
        parts.append("</div>")
    for key in ("thumbnail", "image"):
        url = (embed.get(key) or {}).get("url")
        src = image_src(url) if url else None
        if src:
            parts.append(f"<img class='media' src='{html.escape(src)}' alt='{key}'>")
    footer = (embed.get("footer") or {}).get("text")
    if footer:
        parts.append(f"<div class='footer'>{md(footer)}</div>")
    parts.append("</div>")
    return "".join(parts)


def buttons_html(components: list[Any]) -> str:
    """Action rows of buttons (other components are named, not drawn)."""
    rows = []
    for row in components:
        items = []
        for child in getattr(row, "children", []):
            if isinstance(child, discord.Button):
                style = _STYLES.get(child.style, "")
                state = " disabled" if child.disabled else ""
                label = html.escape(f"{child.emoji or ''} {child.label or ''}".strip())
                items.append(f"<span class='btn {style}{state}'>{label}</span>")
            else:
                items.append(f"<span class='btn'>{html.escape(type(child).__name__)}</span>")
        if items:
            rows.append(f"<div class='buttons'>{''.join(items)}</div>")
    return "".join(rows)


def message_html(
    message: discord.Message,
    *,
    file_src: Callable[[discord.Attachment], str | None],
    names: Callable[[str, int], str],
) -> str:
    """One message as Discord shows it to the people who may see it."""

    def md(text: str) -> str:
        return markdown(text, names)

    by_name = {a.filename: a for a in message.attachments}

    def image_src(url: str) -> str | None:
        if url.startswith("attachment://"):
            attachment = by_name.pop(url.removeprefix("attachment://"), None)
            return file_src(attachment) if attachment is not None else None
        return url

    author = message.author
    is_bot = bool(getattr(author, "bot", False))
    initial = html.escape((author.display_name or "?")[:1].upper())
    head = (
        f"<span class='author'>{html.escape(author.display_name)}</span>"
        + ("<span class='tag'>APP</span>" if is_bot else "")
        + f"<span class='meta'>{message.created_at:%H:%M:%S}</span>"
    )
    body = [f"<div class='content'>{md(message.content)}</div>" if message.content else ""]
    body += [embed_html(e.to_dict(), image_src, md) for e in message.embeds]
    for attachment in by_name.values():
        src = file_src(attachment)
        if src and (attachment.content_type or "").startswith("image/"):
            body.append(f"<img class='media' src='{html.escape(src)}' alt=''>")
        else:
            link = f"<a href='{html.escape(src)}'>" if src else "<span>"
            end = "</a>" if src else "</span>"
            size = f"{attachment.size / 1024:.0f} KiB"
            body.append(
                f"<div class='file'>📎 {link}{html.escape(attachment.filename)}{end} · {size}</div>"
            )
    body.append(buttons_html(list(message.components)))
    if message.flags.ephemeral:
        body.append("<div class='eph'>👁 Only you can see this</div>")
    avatar = f"<div class='avatar{' bot' if is_bot else ''}'>{initial}</div>"
    return f"<div class='msg'>{avatar}<div>{head}{''.join(body)}</div></div>"
