"""A scripted Vertex AI upstream and a fake Google token service, on loopback.

`FakeVertex` serves `/v1/projects/{p}/locations/{l}/publishers/{publisher}/models/{m}:{op}`:
Gemini models (`generateContent`, `streamGenerateContent`) answer like the fake Gemini API,
Claude models (`rawPredict`, `streamRawPredict`) like the fake Anthropic one. A request whose
`Authorization` is not a token the `FakeGoogleAuth` handed out gets Google's 401.

`FakeGoogleAuth` is both of Google's token sources the sidecar can meet: the OAuth token
endpoint a service-account key names as `token_uri` (a JWT grant), and the metadata server
(GKE Workload Identity, Compute Engine) that google-auth finds through `GCE_METADATA_HOST`.
It hands out `ya29.fake-N` tokens lasting `expires_in` seconds, or fails when told to.
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from fakes import anthropic_upstream, gemini_upstream
from fakes.loopback import JsonBody, Loopback, lower_headers

JSON = dict[str, Any]
Script = gemini_upstream.Script | anthropic_upstream.Script


@dataclass
class Seen(JsonBody):
    project: str
    location: str
    publisher: str
    model: str
    method: str
    query: str
    headers: dict[str, str]
    body: bytes


@dataclass
class NoScript:
    delay_s: float = 0.0


class FakeGoogleAuth(Loopback[NoScript, str]):
    def __init__(self) -> None:
        super().__init__(NoScript())
        self.expires_in = 3600.0
        self.fail_with: int | None = None
        self.issued: list[str] = []
        self.grants: list[str] = []  # "jwt-bearer" or "metadata"
        self.app.router.add_post("/token", self._token)
        self.app.router.add_get("/", self._ping)
        self.app.router.add_get(
            "/computeMetadata/v1/instance/service-accounts/default/", self._account
        )
        self.app.router.add_get(
            "/computeMetadata/v1/instance/service-accounts/default/token", self._metadata_token
        )
        self.app.router.add_get("/computeMetadata/v1/project/project-id", self._project)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def service_account_file(self, folder: Path) -> Path:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        info = {
            "type": "service_account",
            "project_id": "fake-project",
            "private_key_id": "fake-key-id",
            "private_key": pem,
            "client_email": "sidecar@fake-project.iam.gserviceaccount.com",
            "client_id": "1",
            "token_uri": f"http://{self.host}/token",
        }
        path = folder / "service-account.json"
        path.write_text(json.dumps(info))
        return path

    def _issue(self, grant: str) -> web.Response:
        self.grants.append(grant)
        if self.fail_with is not None:
            denied = {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
            return web.json_response(denied, status=self.fail_with)
        token = f"ya29.fake-{len(self.issued) + 1}"
        self.issued.append(token)
        body: JSON = {"access_token": token, "expires_in": self.expires_in, "token_type": "Bearer"}
        return web.json_response(body)

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        assert form["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
        return self._issue("jwt-bearer")

    async def _ping(self, request: web.Request) -> web.Response:
        return web.Response(headers={"Metadata-Flavor": "Google"})

    def _flavoured(self, request: web.Request) -> None:
        if request.headers.get("Metadata-Flavor") != "Google":
            raise web.HTTPForbidden()

    async def _account(self, request: web.Request) -> web.Response:
        self._flavoured(request)
        info = {"email": "default@fake.iam.gserviceaccount.com", "scopes": ["cloud-platform"]}
        return web.json_response(info, headers={"Metadata-Flavor": "Google"})

    async def _project(self, request: web.Request) -> web.Response:
        self._flavoured(request)
        return web.Response(text="fake-project", headers={"Metadata-Flavor": "Google"})

    async def _metadata_token(self, request: web.Request) -> web.Response:
        self._flavoured(request)
        response = self._issue("metadata")
        response.headers["Metadata-Flavor"] = "Google"
        return response


class FakeVertex(Loopback[Script, Seen]):
    def __init__(self, auth: FakeGoogleAuth) -> None:
        super().__init__(gemini_upstream.Script())
        self._auth = auth
        self.app.router.add_post(
            "/v1/projects/{project}/locations/{location}/publishers/{publisher}/models/{tail}",
            self._handle,
        )

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        m = request.match_info
        model, _, method = m["tail"].rpartition(":")
        body = await request.read()
        seen = Seen(
            m["project"],
            m["location"],
            m["publisher"],
            model,
            method,
            request.query_string,
            lower_headers(request),
            body,
        )
        given = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if given not in self._auth.issued:
            self.seen.append(seen)
            error = {
                "code": 401,
                "message": "Request had invalid credentials.",
                "status": "UNAUTHENTICATED",
            }
            return web.json_response({"error": error}, status=401)
        s = await self.take(seen)
        if m["publisher"] == "anthropic":
            return await self._claude(request, s, model, method)
        return await self._gemini(request, s, method)

    async def _gemini(self, request: web.Request, s: Script, method: str) -> web.StreamResponse:
        if not isinstance(s, gemini_upstream.Script):
            s = gemini_upstream.Script()
        if s.status != 200:
            return gemini_upstream.error_response(s.status, s)
        if method == "streamGenerateContent":
            return await gemini_upstream.stream(request, s)
        return web.json_response(gemini_upstream.answer(s))

    async def _claude(
        self, request: web.Request, s: Script, model: str, method: str
    ) -> web.StreamResponse:
        if isinstance(s, gemini_upstream.Script) and s.status != 200:
            # Vertex itself (quota, routing) answers in Google's shape, whatever the model.
            return gemini_upstream.error_response(s.status, s)
        if not isinstance(s, anthropic_upstream.Script):
            s = anthropic_upstream.Script()
        if s.status != 200:
            return anthropic_upstream.error_response(s)
        if method == "streamRawPredict":
            return await anthropic_upstream.stream(request, s, model)
        return web.json_response(anthropic_upstream.message(s, model))
