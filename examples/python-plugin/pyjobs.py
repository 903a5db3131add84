"""pyjobs: an integrationd plugin written in Python, speaking the plugin protocol with
grpcio and nothing from this project but `plugin.proto`.

Job status reports arrive as webhooks signed with HMAC-SHA256 (`x-signature-256:
sha256=<hex>` of the body, the integration's `webhook-secret`), and become canonical
events: a failed job an error, any other a log line. `package.py` builds this file and
the generated protocol stubs into one executable zip (`pyjobs.pyz`).

What any plugin must do, in the order this file does it (README, "Writing a plugin in
any language"):

1. Refuse to run without the magic cookie, explaining itself on stderr.
2. Pick the highest protocol major it shares with BETALOGS_PLUGIN_PROTOCOL_VERSIONS,
   or exit.
3. Exit with its host: BETALOGS_PLUGIN_HOST_PID is the only process it serves.
4. Bind BETALOGS_PLUGIN_SOCKET (mode 0600), accepting connections from the host only.
5. Require BETALOGS_PLUGIN_TOKEN in `x-betalogs-plugin-token` on every call, health
   included.
6. Print `1|APP|unix|SOCKET|grpc` and nothing else on stdout; log to stderr.
7. Stop on Shutdown, SIGTERM and the host's death.
"""

import ctypes
import hashlib
import hmac
import json
import os
import signal
import socket
import struct
import sys
import threading
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from betalogs.plugin.v1 import plugin_pb2, plugin_pb2_grpc

NAME = "pyjobs"
VERSION = "0.1.0"
PROTOCOLS = [1]
MAGIC_COOKIE = "b3f1c0a7d2e94e6b8a51f0c3d7e2a9b4c6d8e0f1a2b3c4d5e6f708192a3b4c5d"
TOKEN_KEY = "x-betalogs-plugin-token"
SIGNATURE_HEADER = "x-signature-256"
SECRET_ROLE = "webhook_secret"
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
HOST_KEYS = ("credentials", "mappings")

CONFIG_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "required": ["service"],
    "properties": {
        "service": {"type": "string", "description": "The service the jobs belong to."},
        "credentials": {
            "type": "object",
            "description": "credential role -> the name of a stored credential",
            "additionalProperties": {"type": "string"},
        },
        "mappings": {"type": "object"},
    },
}


def log(level, message, **fields):
    """One JSON line on stderr, the shape integrationd reads plugin logs in."""
    fields["message"] = message
    sys.stderr.write(json.dumps({"level": level, "fields": fields}) + "\n")
    sys.stderr.flush()


class Refused(Exception):
    """A configuration that does not fit: INVALID_ARGUMENT, naming the field."""


def parse_config(config_json, credentials):
    """The settings and webhook secrets of one Configure, or `None` for the daemon's own
    idle instance (`{}`)."""
    try:
        config = json.loads(config_json or "{}")
    except ValueError as err:
        raise Refused(f"the configuration is not JSON: {err}")
    if not isinstance(config, dict):
        raise Refused("the configuration must be a JSON object")
    settings = {k: v for k, v in config.items() if k not in HOST_KEYS}
    if not settings:
        return None
    for key in settings:
        if key not in CONFIG_SCHEMA["properties"]:
            raise Refused(f"`{key}`: unknown field, expected `service`")
    service = settings.get("service")
    if not isinstance(service, str) or not service:
        raise Refused(f"`service`: expected a non-empty string, got {json.dumps(service)}")
    secret = next((c for c in credentials if c.name == SECRET_ROLE), None)
    if secret is None:
        raise Refused(f"`credentials.{SECRET_ROLE}`: no credential for this role")
    if secret.kind != "webhook-secret":
        raise Refused(f"`credentials.{SECRET_ROLE}`: kind `{secret.kind}`, expected webhook-secret")
    try:
        stored = json.loads(secret.secret)
    except ValueError:
        # Never echo the secret: say only what is wrong with it.
        raise Refused(f"`credentials.{SECRET_ROLE}`: the secret is not JSON")
    if isinstance(stored, str):
        stored = {"current": stored}
    keys = [stored.get(k) for k in ("current", "previous") if isinstance(stored, dict)]
    keys = [k.encode() for k in keys if isinstance(k, str) and k]
    if not keys:
        raise Refused(f"`credentials.{SECRET_ROLE}`: the secret has no `current` value")
    return {"service": service, "keys": keys}


def event_id(tenant, integration, event_type, source_id):
    """The same deterministic id plugin-kit's `event_id` gives: a redelivery is no
    duplicate."""
    digest = hashlib.sha256()
    for part in (tenant, integration, event_type, source_id):
        digest.update(part.encode() + b"\0")
    return "ev_" + digest.digest()[:16].hex()


def map_report(report, service, tenant, integration):
    """The canonical event (CloudEvents 1.0 plus tenant, integration, category,
    severity) of one job report."""
    for key in ("id", "time", "status"):
        if not isinstance(report.get(key), str):
            raise ValueError(f"`{key}`: expected a string")
    failed = report["status"] == "failed"
    event_type = "com.betalogs.system.error" if failed else "com.betalogs.system.log"
    event = {
        "specversion": "1.0",
        "id": event_id(tenant, integration, event_type, report["id"]),
        "source": "https://jobs.example.invalid/reports",
        "type": event_type,
        "time": report["time"],
        "datacontenttype": "application/json",
        "tenant": tenant,
        "integration": integration,
        "category": "system",
        "severity": "error" if failed else "info",
        "data": {
            "service.name": service,
            "log.message": report.get("message") or f"job {report['status']}",
            # The schema requires these three: evidence links, the daemon's enrichments
            # (empty from a plugin) and the untouched source payload.
            "links": [],
            "enrichments": [],
            "original": report,
        },
    }
    if isinstance(report.get("job"), str):
        event["subject"] = report["job"]
    return json.dumps(event)


class Jobs(plugin_pb2_grpc.PluginServicer):
    """The protocol's calls. Those not overridden (Collect, Enrich, ...) answer
    UNIMPLEMENTED, as the generated base class does."""

    def __init__(self, protocol, stop):
        self.protocol = protocol
        self.stop = stop
        self.lock = threading.Lock()
        self.instance = None

    def Describe(self, request, context):
        return plugin_pb2.DescribeResponse(
            name=NAME,
            version=VERSION,
            description="Job status reports by signed webhook (a plugin in Python)",
            capabilities=["check", "webhook"],
            config_schema_json=json.dumps(CONFIG_SCHEMA),
            credential_kinds=["webhook-secret"],
            protocol_version=self.protocol,
        )

    def Configure(self, request, context):
        try:
            settings = parse_config(request.config_json, request.credentials)
        except Refused as err:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        with self.lock:
            self.instance = None if settings is None else {
                **settings,
                "tenant": request.tenant,
                "integration": request.integration,
            }
        log("INFO", "configured", tenant=request.tenant, integration=request.integration)
        return plugin_pb2.ConfigureResponse()

    def Check(self, request, context):
        with self.lock:
            configured = self.instance is not None
        result = plugin_pb2.CheckResult(
            resource="webhook secret",
            permission="verify deliveries",
            ok=configured,
            message="configured" if configured else "not configured",
            error_class="" if configured else "config",
        )
        return plugin_pb2.CheckResponse(ok=configured, results=[result])

    def HandleWebhook(self, request, context):
        with self.lock:
            instance = self.instance
        if instance is None:
            return plugin_pb2.WebhookResponse(status=401, message="not configured for webhooks")
        if not request.host_verified:
            signature = next(
                (h.value for h in request.headers if h.name.lower() == SIGNATURE_HEADER), ""
            )
            if not any(
                hmac.compare_digest(
                    signature.encode(),
                    b"sha256=" + hmac.new(key, request.body, hashlib.sha256).hexdigest().encode(),
                )
                for key in instance["keys"]
            ):
                return plugin_pb2.WebhookResponse(
                    status=401, message=f"{SIGNATURE_HEADER} is missing or does not match"
                )
        try:
            report = json.loads(request.body)
            if not isinstance(report, dict):
                raise ValueError("expected a JSON object")
            event = map_report(
                report, instance["service"], instance["tenant"], instance["integration"]
            )
        except ValueError as err:
            return plugin_pb2.WebhookResponse(status=400, message=f"not a report: {err}")
        return plugin_pb2.WebhookResponse(status=202, events_json=[event])

    def Shutdown(self, request, context):
        log("INFO", "shutdown requested by the host", reason=request.reason)
        self.stop.set()
        return plugin_pb2.ShutdownResponse()


class RequireToken(grpc.ServerInterceptor):
    """Every call, health included, must carry the token; compared in constant time."""

    def __init__(self, token):
        self.token = token.encode()

    def intercept_service(self, continuation, details):
        presented = dict(details.invocation_metadata).get(TOKEN_KEY, "")
        if hmac.compare_digest(presented.encode(), self.token):
            return continuation(details)
        handler = continuation(details)

        def refuse(request, context):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong plugin token")

        if handler is not None and handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(refuse)
        return grpc.unary_unary_rpc_method_handler(refuse)


def pump(source, target):
    """Copies one direction of a relayed connection until it ends."""
    try:
        while True:
            chunk = source.recv(65536)
            if not chunk:
                break
            target.sendall(chunk)
    except OSError:
        pass
    finally:
        for sock, how in ((target, socket.SHUT_WR), (source, socket.SHUT_RD)):
            try:
                sock.shutdown(how)
            except OSError:
                pass


def serve_host_only(listener, inner, host_pid):
    """Accepts on the assigned socket and relays to the gRPC server behind it only the
    host's connections: grpcio cannot see a Unix peer's pid, so the check is here."""
    creds = struct.calcsize("3i")
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        pid, _, _ = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, creds))
        if pid != host_pid:
            log("WARN", "refused a connection from a process other than the host", peer=pid)
            conn.close()
            continue
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        upstream.connect(inner)
        for pair in ((conn, upstream), (upstream, conn)):
            threading.Thread(target=pump, args=pair, daemon=True).start()


def main():
    if os.environ.get("BETALOGS_PLUGIN_MAGIC_COOKIE") != MAGIC_COOKIE:
        sys.stderr.write(
            f"This is the `{NAME}` plugin for integrationd, the Betalogs integration "
            "supervisor. It is not meant to be run by hand: install it into the daemon's "
            "plugin directory and manage it with `integrationctl plugins`.\n"
        )
        return 1
    offered = os.environ.get("BETALOGS_PLUGIN_PROTOCOL_VERSIONS", "")
    try:
        common = set(int(v) for v in offered.split(",") if v.strip()) & set(PROTOCOLS)
    except ValueError:
        common = set()
    if not common:
        log("ERROR", "no protocol version in common", offered=offered, speaks=str(PROTOCOLS))
        return 1
    protocol = max(common)
    socket_path = os.environ.get("BETALOGS_PLUGIN_SOCKET", "")
    token = os.environ.get("BETALOGS_PLUGIN_TOKEN", "")
    host_pid = int(os.environ.get("BETALOGS_PLUGIN_HOST_PID") or os.getppid())
    if not socket_path.startswith("/") or not token:
        log("ERROR", "BETALOGS_PLUGIN_SOCKET or BETALOGS_PLUGIN_TOKEN is missing")
        return 1

    stop = threading.Event()
    for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(number, lambda *_: stop.set())
    # The host's death is a SIGHUP (PR_SET_PDEATHSIG), checked once after asking so a
    # host already gone is not missed; the loop below watches the parent too.
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGHUP, 0, 0, 0)
    if os.getppid() != host_pid:
        return 0

    # Sockets are created 0600: nobody else may even connect.
    os.umask(0o077)
    inner = socket_path + ".grpc"
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4),
        interceptors=[RequireToken(token)],
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ],
    )
    plugin_pb2_grpc.add_PluginServicer_to_server(Jobs(protocol, stop), server)
    health_servicer = health.HealthServicer()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    server.add_insecure_port("unix:" + inner)
    server.start()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(socket_path)
    os.chmod(socket_path, 0o600)
    listener.listen(16)
    threading.Thread(target=serve_host_only, args=(listener, inner, host_pid), daemon=True).start()

    sys.stdout.write(f"1|{protocol}|unix|{socket_path}|grpc\n")
    sys.stdout.flush()
    # Stdout belongs to the handshake: from now on it is stderr.
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    while not stop.wait(0.2):
        if os.getppid() != host_pid:
            log("INFO", "the host died")
            break
    log("INFO", "stopping")
    listener.close()
    server.stop(grace=2).wait()
    for path in (socket_path, inner):
        try:
            os.unlink(path)
        except OSError:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
