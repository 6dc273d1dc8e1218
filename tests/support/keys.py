"""Key pairs made in the test for every public-key token kind, and a JWKS served over
real HTTP by a small local server that a test can rotate and take down."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

ALGORITHMS = ("RS256", "RS384", "RS512", "ES256", "ES384", "EdDSA")


@dataclass(frozen=True)
class KeyPair:
    algorithm: str
    private: Any
    kid: str

    @property
    def public_pem(self) -> str:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()

    @property
    def jwk(self) -> dict[str, Any]:
        algorithm = jwt.get_algorithm_by_name(self.algorithm)
        return {**algorithm.to_jwk(self.private.public_key(), as_dict=True), "kid": self.kid,
                "alg": self.algorithm, "use": "sig"}

    def token(self, user_id: str, ttl_s: float = 3600.0, **claims: Any) -> str:
        now = time.time()
        body = {"sub": user_id, "iat": now, "exp": now + ttl_s, **claims}
        return jwt.encode(body, self.private, algorithm=self.algorithm, headers={"kid": self.kid})


def key_pair(algorithm: str, kid: str = "") -> KeyPair:
    private: Any
    if algorithm.startswith("RS"):
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif algorithm == "ES256":
        private = ec.generate_private_key(ec.SECP256R1())
    elif algorithm == "ES384":
        private = ec.generate_private_key(ec.SECP384R1())
    else:
        private = ed25519.Ed25519PrivateKey.generate()
    return KeyPair(algorithm, private, kid or f"{algorithm.lower()}-1")


class JwksServer:
    """``GET /jwks.json`` on 127.0.0.1; ``keys`` can be replaced (rotation) and the
    server stopped (outage); ``requests`` counts the fetches."""

    def __init__(self, *keys: KeyPair) -> None:
        self.keys = list(keys)
        self.requests = 0
        self._server: ThreadingHTTPServer | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/jwks.json"

    def start(self) -> JwksServer:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests += 1
                body = json.dumps({"keys": [key.jwk for key in outer.keys]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
