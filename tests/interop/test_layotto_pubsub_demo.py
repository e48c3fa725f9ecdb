"""Layotto's pub/sub demo flow, on Layotto's own published Java SDK, against the sidecar.

Why not Layotto's Go demo itself (``demo/pubsub`` in Layotto's repository: a publisher that
sends ``world`` to topic ``hello`` and ``value1`` to ``topic1`` through the go-sdk's default
client at 127.0.0.1:34904, and an AppCallback server on :9999 that subscribes to both on the
component named by ``-s``): its module ``mosn.io/layotto/demo`` is not served by the Go module
proxy reachable here and in CI (403 for the versions matching v0.5.0 and the current tree), nor
are the modules it imports, ``mosn.io/layotto/spec`` and ``github.com/layotto/go-sdk``. The one
``mosn.io/layotto`` version served, v0.5.0, leaves ``demo/``, ``spec/`` and ``sdk/go-sdk/`` out
(each is a module of its own), so nothing of the demo can be built from it. The Java SDK's
pub/sub demo (``examples``) is not published on Maven Central either.

What is published, and used here unchanged, is Layotto's Java SDK, ``io.mosn.layotto:runtime-sdk``
1.1.0, with the stubs Layotto generated and compiled, ``io.mosn.layotto:runtime-spec-pb`` 1.1.0.
It holds both halves of the demo: the publishing client (``RuntimeClient.publishEvent``) and the
subscriber's AppCallback gRPC server (``RuntimeServerGrpc`` with ``DefaultSubscriber``), which
answers ListTopicSubscriptions and OnTopicEvent. The two ``main`` classes below only wire those
up the way the Java SDK's demo does: component ``redis``, topics ``hello`` (``world``) and
``topic1`` (``message1``), the SDK's default sidecar address 127.0.0.1:34904
(``RuntimeProperties.DEFAULT_PORT``) and callback port 9999. Those ports are the demo's and fixed,
so a test skips when either is taken. Maven resolves the SDK; the compiled classes and the
classpath are kept under ``.tools/layotto-demo/`` keyed on the SDK version and these sources.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.sidecar import REPO, Sidecar, free_port, serve_command
from tests.tools import tool_missing

SDK_VERSION = "1.1.0"
SIDECAR_PORT = 34904  # the SDK's RuntimeProperties.DEFAULT_PORT, as the demo publisher uses it
APP_PORT = 9999  # the demo subscriber's callback server port (and the sidecar's default --app-port)
PUBSUB = "redis"  # the component name the Java SDK's demo publishes to and subscribes on
SENT = {"hello": "world", "topic1": "message1"}

POM = f"""<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>interop</groupId>
  <artifactId>layotto-pubsub-demo</artifactId>
  <version>0.0.0</version>
  <dependencies>
    <dependency>
      <groupId>io.mosn.layotto</groupId>
      <artifactId>runtime-sdk</artifactId>
      <version>{SDK_VERSION}</version>
      <exclusions>
        <!-- grpc-all's extras the SDK never touches (xDS, ALTS, okhttp, test helpers). -->
        <exclusion><groupId>io.grpc</groupId><artifactId>grpc-xds</artifactId></exclusion>
        <exclusion><groupId>io.grpc</groupId><artifactId>grpc-testing</artifactId></exclusion>
        <exclusion><groupId>io.grpc</groupId><artifactId>grpc-okhttp</artifactId></exclusion>
      </exclusions>
    </dependency>
    <dependency>
      <groupId>org.slf4j</groupId>
      <artifactId>slf4j-simple</artifactId>
      <version>1.7.30</version>
    </dependency>
  </dependencies>
  <build>
    <plugins>
      <plugin>
        <groupId>org.apache.maven.plugins</groupId>
        <artifactId>maven-dependency-plugin</artifactId>
        <version>3.6.0</version>
      </plugin>
    </plugins>
  </build>
</project>
"""

SUBSCRIBER = """package layottodemo;

import io.mosn.layotto.v1.RuntimeServerGrpc;
import io.mosn.layotto.v1.callback.component.pubsub.DefaultSubscriber;
import java.nio.charset.StandardCharsets;

/** The demo's subscriber: the SDK's callback server on 9999, one listener per topic. */
public final class Subscriber {
    public static void main(String[] args) throws Exception {
        DefaultSubscriber topics = new DefaultSubscriber("@PUBSUB@");
        for (String topic : new String[] {"hello", "topic1"}) {
            topics.subscribe(topic, event -> {
                String data = new String(event.getData(), StandardCharsets.UTF_8);
                System.out.println(String.join("\\t", "received", event.getPubsubName(), event.getTopic(), data,
                    event.getId()));
                System.out.flush();
            });
        }
        RuntimeServerGrpc server = new RuntimeServerGrpc(@APP_PORT@);
        server.registerPubSubCallback(topics.getComponentName(), topics);
        server.start();
        System.out.println("listening");
        System.out.flush();
        server.blockUntilShutdown();
    }
}
""".replace("@PUBSUB@", PUBSUB).replace("@APP_PORT@", str(APP_PORT))

PUBLISHER = """package layottodemo;

import io.mosn.layotto.v1.RuntimeClientBuilder;
import io.mosn.layotto.v1.config.RuntimeProperties;
import java.nio.charset.StandardCharsets;
import spec.sdk.runtime.v1.client.RuntimeClient;

/** The demo's publisher: the SDK's client on its default port, one event per topic. */
public final class Publisher {
    public static void main(String[] args) {
        RuntimeClient client = new RuntimeClientBuilder().withPort(RuntimeProperties.DEFAULT_PORT).build();
        try {
            send(client, "hello", "world");
            send(client, "topic1", "message1");
        } finally {
            client.shutdown();
        }
    }

    private static void send(RuntimeClient client, String topic, String data) {
        client.publishEvent("@PUBSUB@", topic, data.getBytes(StandardCharsets.UTF_8));
        System.out.println(String.join("\\t", "published", topic, data));
    }
}
""".replace("@PUBSUB@", PUBSUB)

SOURCES = {"Subscriber.java": SUBSCRIBER, "Publisher.java": PUBLISHER}


def _build_dir() -> Path:
    digest = hashlib.sha256("\0".join([POM, *SOURCES.values()]).encode()).hexdigest()[:12]
    return REPO / ".tools" / "layotto-demo" / f"java-sdk-{SDK_VERSION}-{digest}"


@pytest.fixture(scope="module")
def demo_classpath() -> str:
    """``classes:deps`` of the demo's two mains, built once per SDK version and source."""
    if shutil.which("mvn") is None or shutil.which("java") is None or shutil.which("javac") is None:
        tool_missing("Maven or a JDK is not installed: Layotto's Java SDK cannot be fetched or run")
    done = _build_dir()
    if not (done / "classpath.txt").is_file():
        work = done.with_name(f"{done.name}.tmp-{os.getpid()}")
        shutil.rmtree(work, ignore_errors=True)
        (work / "src").mkdir(parents=True)
        (work / "pom.xml").write_text(POM)
        for name, text in SOURCES.items():
            (work / "src" / name).write_text(text)
        resolve = subprocess.run(
            [
                "mvn",
                "-q",
                "-B",
                "dependency:build-classpath",
                "-Dmdep.outputFile=deps.txt",
                "-Dmdep.includeScope=runtime",
            ],
            cwd=work,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert resolve.returncode == 0, f"maven could not resolve the SDK:\n{resolve.stdout}\n{resolve.stderr}"
        deps = (work / "deps.txt").read_text().strip()
        compile_ = subprocess.run(
            ["javac", "-d", "classes", "-cp", deps, *(f"src/{name}" for name in SOURCES)],
            cwd=work,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert compile_.returncode == 0, f"javac failed:\n{compile_.stdout}\n{compile_.stderr}"
        (work / "classpath.txt").write_text(f"{done / 'classes'}{os.pathsep}{deps}")
        try:
            work.rename(done)
        except OSError:  # built meanwhile by another run: keep that one
            shutil.rmtree(work, ignore_errors=True)
    return (done / "classpath.txt").read_text().strip()


def _taken(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("0.0.0.0", port))
        except OSError:
            return True
    return False


def _wait_for(what: str, check: Callable[[], bool], timeout: float, logs: str | Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} within {timeout} s\n{_logs(logs)}")


def _logs(*paths: str | Path) -> str:
    return "\n".join(f"--- {p} ---\n{Path(p).read_text(errors='replace')}" for p in paths if Path(p).exists())


def _components(folder: Path, backend: str, redis_address: str) -> Path:
    folder.mkdir()
    metadata = f"\n  metadata:\n  - name: redisHost\n    value: {redis_address!r}" if backend == "redis" else ""
    (folder / "pubsub.yaml").write_text(
        f"apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: {PUBSUB}\n"
        f"spec:\n  type: pubsub.{backend}\n  version: v1{metadata}\n"
    )
    return folder


@pytest.mark.parametrize(
    ("transport", "backend"), [("native", "in-memory"), ("grpcio", "in-memory"), ("native", "redis")]
)
def test_layotto_pubsub_demo_publisher_reaches_demo_subscriber(
    demo_classpath: str, tmp_path: Path, request: pytest.FixtureRequest, transport: str, backend: str
) -> None:
    for port, who in ((SIDECAR_PORT, "the sidecar"), (APP_PORT, "the demo subscriber")):
        if _taken(port):
            pytest.skip(f"port {port}, fixed by Layotto's demo for {who}, is already in use")
    redis_address = request.getfixturevalue("redis_server").address if backend == "redis" else ""
    resources = _components(tmp_path / "components", backend, redis_address)
    java = ["java", "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn", "-cp", demo_classpath]

    # 1. the subscriber, as the demo starts it: before the sidecar
    subscriber_log = tmp_path / "subscriber.log"
    with subscriber_log.open("wb") as out:
        subscriber = subprocess.Popen([*java, "layottodemo.Subscriber"], stdout=out, stderr=subprocess.STDOUT)
    sidecar: Sidecar | None = None
    try:
        _wait_for(
            "the demo subscriber did not listen",
            lambda: subscriber.poll() is not None or "listening" in subscriber_log.read_text(),
            60,
            subscriber_log,
        )
        assert subscriber.poll() is None, f"the demo subscriber exited\n{_logs(subscriber_log)}"

        # 2. the sidecar on the demo's address, dialling the subscriber on the demo's port
        actuator = free_port()
        sidecar_log = tmp_path / "sidecar.log"
        args = serve_command(
            SIDECAR_PORT,
            actuator,
            "--app-port",
            str(APP_PORT),
            "--resources-path",
            str(resources),
            "--grpc-transport",
            transport,
        )
        with sidecar_log.open("wb") as out:
            process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path)
        sidecar = running = Sidecar(SIDECAR_PORT, actuator, process, sidecar_log)
        running.wait_ready()

        def subscribed() -> bool:
            code, body = running.http("/actuator/info")
            return code == 200 and sorted(json.loads(body)["app"]["subscriptions"]) == sorted(
                f"{PUBSUB}/{topic}" for topic in SENT
            )

        _wait_for("the sidecar did not subscribe for the demo subscriber", subscribed, 30, sidecar_log)

        # 3. the publisher, to the SDK's default address
        published = subprocess.run([*java, "layottodemo.Publisher"], capture_output=True, text=True, timeout=120)
        assert published.returncode == 0, (
            f"the demo publisher failed:\n{published.stdout}\n{published.stderr}\n{_logs(sidecar_log)}"
        )
        assert [line.split("\t")[1:] for line in published.stdout.splitlines() if line.startswith("published")] == [
            [topic, data] for topic, data in SENT.items()
        ]

        def received() -> list[list[str]]:
            lines = subscriber_log.read_text(errors="replace").splitlines()
            return [line.split("\t")[1:] for line in lines if line.startswith("received\t")]

        _wait_for(
            "the demo subscriber did not receive both events",
            lambda: len(received()) >= len(SENT),
            30,
            subscriber_log,
        )
        events = received()
        assert sorted((pubsub, topic, data) for pubsub, topic, data, _ in events) == sorted(
            (PUBSUB, topic, data) for topic, data in SENT.items()
        ), _logs(subscriber_log, sidecar_log)
        assert all(event_id for *_, event_id in events), "each event carries its id"
        assert subscriber.poll() is None, "the subscriber's callbacks all succeeded and it still serves"
    finally:
        if sidecar is not None:
            sidecar.stop()
        subscriber.terminate()
        try:
            subscriber.wait(15)
        except subprocess.TimeoutExpired:
            subscriber.kill()
            subscriber.wait()
