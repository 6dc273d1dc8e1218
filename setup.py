"""Packaging for tornado_gw: a real-time WebSocket gateway on Tornado."""

from setuptools import find_packages, setup

setup(
    name="tornado_gw",
    version="0.1.0",
    description="Real-time WebSocket gateway for chat-style products (Tornado, Redis, Postgres)",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=["tornado_gw", "tornado_gw.*"]),
    package_data={"tornado_gw.web": ["demo/*"]},  # the /demo page (development mode)
    install_requires=[
        "tornado>=6.5,<6.7",  # web/ws_handler.py trims per-connection state using 6.5/6.6 internals
        "redis[hiredis]>=5.0,<9",  # hiredis: the C reply parser, ~20 % less CPU per Pub/Sub message
        "psycopg[binary]>=3.1,<4",
        "psycopg-pool>=3.2,<4",
        "pyjwt[crypto]>=2.8,<3",
        "ujson>=5.9,<7",
        "pyyaml>=6.0,<7",
        "prometheus-client>=0.20,<1",
    ],
    extras_require={
        # tornado_gw.client (docs/clients.md): the asyncio client, without the server's dependencies.
        "client": ["websockets>=13,<18"],
        "test": [
            "pytest>=8,<10",
            "pytest-tornasync>=0.6,<1",
            "pytest-timeout>=2.3,<3",
            "coverage[toml]>=7.4,<8",
            "websockets>=13,<18",
            "hypothesis>=6.100,<7",
            "cryptography>=42",  # key pairs made in the tests for RS*/ES*/EdDSA tokens
            "ruff>=0.6",
            "jsonschema>=4.18,<5",  # tests/ship: docker-compose.yml against the Compose Specification
            "dockerfile-parse>=2,<3",  # tests/ship: the Dockerfile's instructions
            "honcho>=2,<3",  # make run-all: the Procfile's processes, one prefixed log, one Ctrl-C
            "shiv>=1.0.5,<2",  # make build-ws: bin/wsgateway, one zipapp with the C extensions
            "selenium>=4.20,<5",  # tests/client/test_demo_browser.py drives the Debian chromium
        ],
        "type": [
            "mypy>=1.10,<3",
            "types-PyYAML>=6",
            "types-ujson>=5",
        ],
    },
    entry_points={"console_scripts": ["tornado-gw=tornado_gw.cli:main"]},
    classifiers=[
        "Framework :: Tornado",
        "Programming Language :: Python :: 3",
        "Topic :: Internet :: WWW/HTTP",
    ],
)
