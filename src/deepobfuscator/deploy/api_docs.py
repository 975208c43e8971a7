"""The service's API reference at /docs, rendered on the server from its OpenAPI schema:
one self-contained HTML page (no Swagger UI, fonts or scripts from outside the server, which
FastAPI's /docs and /redoc load). Off unless `serve --api-docs`; /openapi.json is always
there for client generators."""

from __future__ import annotations

import html
import json

from fastapi import FastAPI
from fastapi.responses import HTMLResponse

_STYLE = ("body{font:15px/1.5 system-ui,sans-serif;max-width:60em;margin:2em auto;padding:0 1em}"
          "code,pre{background:#f4f4f4;padding:0 .2em}pre{padding:.6em;overflow:auto}"
          "h2{border-top:1px solid #ccc;padding-top:1em}.m{font-weight:bold;color:#06c}")


def _schema_name(content: dict) -> str:
    for media, spec in content.items():
        ref = spec.get("schema", {}).get("$ref", "")
        return f"{media}" + (f" ({ref.rsplit('/', 1)[-1]})" if ref else "")
    return ""


def render(schema: dict) -> str:
    """The reference as HTML: every operation with its summary, description, whether it
    needs the bearer token, its request body and its responses; then every data model."""
    e = html.escape
    info = schema.get("info", {})
    parts = [f"<!doctype html><meta charset=utf-8><title>{e(info.get('title', 'API'))}</title>",
             f"<style>{_STYLE}</style><h1>{e(info.get('title', ''))} "
             f"<small>{e(str(info.get('version', '')))}</small></h1>",
             f"<p>{e(info.get('description', ''))}</p>",
             "<p>The machine-readable schema: <a href=\"/openapi.json\">/openapi.json</a>.</p>"]
    for path, ops in schema.get("paths", {}).items():
        for method, op in ops.items():
            parts.append(f"<h2><span class=m>{e(method.upper())}</span> <code>{e(path)}</code>"
                         "</h2>")
            if op.get("summary"):
                parts.append(f"<p><b>{e(op['summary'])}</b></p>")
            if op.get("description"):
                parts.append(f"<p>{e(op['description'])}</p>")
            if op.get("security"):
                parts.append("<p>Needs <code>Authorization: Bearer TOKEN</code> when the "
                             "server has a token.</p>")
            body = op.get("requestBody")
            if body:
                parts.append(f"<p>Body: <code>{e(_schema_name(body.get('content', {})))}"
                             f"</code>. {e(body.get('description', ''))}</p>")
            rows = "".join(f"<li><code>{e(code)}</code> {e(r.get('description', ''))} "
                           f"<code>{e(_schema_name(r.get('content', {})))}</code></li>"
                           for code, r in op.get("responses", {}).items())
            parts.append(f"<p>Responses:</p><ul>{rows}</ul>")
    models = schema.get("components", {}).get("schemas", {})
    if models:
        parts.append("<h2>Data models</h2>")
        for name, spec in models.items():
            parts.append(f"<h3>{e(name)}</h3><pre>{e(json.dumps(spec, indent=1))}</pre>")
    return "\n".join(parts)


def mount_api_docs(app: FastAPI, headers: dict[str, str]) -> None:
    """/docs: the reference of every route registered so far (call it after them)."""
    page = render(app.openapi())

    @app.get("/docs", response_class=HTMLResponse, include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(page, headers=headers)
