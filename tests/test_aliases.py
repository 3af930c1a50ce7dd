"""MILVUS_COLLECTION naming a Milvus alias, and VectorStore.point_alias (the blue/green handover after a reindex).

On Milvus Lite (milvus-lite 3) and on the real Milvus 2.3 server: an alias is created and moved in one call,
a collection's name is never taken for one, a store opened on an alias reads and writes the collection behind
it and checks that collection's embedding space, follows a move to a collection of its own space and refuses
(503, collection_moved) one of another space. The handover itself runs on the server, where the alias can be
moved while services read through it (on Lite the service holds the data file: the switch is a restart).
Everything here works on the 2.3 server. point_alias's refusal on a Milvus without aliases is not shown: both
backends of the suite have them (the refusal passes Milvus' own message on, with the way forward).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from conf.errors import CollectionMoved, StartupError
from conf.settings import ResizeMode, Settings
from model.embedder import DIM, Embedder, load_embedder
from service.store.connection import ALIAS_CHECK, MilvusClient
from service.store.filters import DEFAULT_NAMESPACE
from service.store.meta import SpaceTag
from service.store.records import Record, VectorStore
from tests.conftest import LiveService, make_settings, photo

SPACE = SpaceTag("a1a1a1a1a1a1a1a1", "space A (test)")
OTHER = SpaceTag("b2b2b2b2b2b2b2b2", "space B (test)")


@pytest.fixture(params=["lite", "server"])
def milvus_uri(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Milvus Lite and the real Milvus 2.3 server: both have aliases."""
    return request.getfixturevalue("milvus_server") if request.param == "server" else str(tmp_path / "m.db")


@dataclass
class Stores:
    """Stores on one Milvus, all closed (and their collections dropped) after the test."""

    uri: str
    tmp: Path
    opened: list[VectorStore]

    def settings(self, name: str) -> Settings:
        """Settings for collection (or alias) `name` on this Milvus."""
        return make_settings(self.tmp, milvus_uri=self.uri, milvus_collection=name)

    def open(self, name: str, space: SpaceTag | None) -> VectorStore:
        """A store on `name`, not yet connected."""
        store = VectorStore(self.settings(name), DIM, space)
        self.opened.append(store)
        return store

    def connected(self, name: str, space: SpaceTag | None) -> VectorStore:
        """A store on `name`, connected (a collection is created when nothing has that name)."""
        store = self.open(name, space)
        store.connect()
        return store

    def client(self) -> MilvusClient:
        """A plain client of this Milvus, for what the test checks behind imgsim's back."""
        return MilvusClient(self.uri)


@pytest.fixture
def stores(milvus_uri: str, tmp_path: Path) -> Iterator[Stores]:
    """Stores on Lite and on the server; aliases and collections they made are dropped afterwards."""
    made = Stores(milvus_uri, tmp_path, [])
    yield made
    client = made.client()
    try:
        names = {s.collection for s in made.opened} & set(client.list_collections())
        for name in names:
            for alias in client.list_aliases(name).get("aliases", []):
                client.drop_alias(alias)
        for name in names:
            client.drop_collection(name)
    finally:
        client.close()
        for store in made.opened:
            store.close()


def unique(prefix: str) -> str:
    """A collection or alias name no other test uses."""
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def unit(seed: int) -> np.ndarray:
    """A unit vector of the store's width."""
    vec = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return vec / np.linalg.norm(vec)


def put(store: VectorStore, key: str, seed: int) -> None:
    """Store one record under `key` in the default namespace."""
    store.put_many(store.scope(DEFAULT_NAMESPACE), [Record(key, f"{seed:032x}", f"{key}.jpg", unit(seed))])


def keys(store: VectorStore) -> set[str]:
    """The keys the default namespace of the store's collection holds."""
    scope = store.scope(DEFAULT_NAMESPACE)
    return {r["key"] for r in store.list_records(scope, 0, 100).rows}


def points_at(stores: Stores, alias: str) -> str:
    """The collection `alias` points at, asked of Milvus directly."""
    client = stores.client()
    try:
        return str(client.describe_alias(alias)["collection_name"])
    finally:
        client.close()


# --- point_alias ------------------------------------------------------------------------
def test_point_alias_creates_then_moves_an_alias(stores: Stores) -> None:
    first, second, alias = unique("blue"), unique("green"), unique("catalog")
    blue, green = stores.connected(first, SPACE), stores.connected(second, OTHER)
    assert blue.point_alias(alias) == f"alias {alias}: created, -> {first}"
    assert points_at(stores, alias) == first
    assert green.point_alias(alias) == f"alias {alias}: {first} -> {second}"
    assert points_at(stores, alias) == second
    assert green.point_alias(alias) == f"alias {alias}: already points at {second}"  # a rerun changes nothing
    client = stores.client()
    try:
        assert alias not in client.list_collections()  # an alias, never a collection of that name
    finally:
        client.close()


def test_point_alias_refuses_the_name_of_a_collection(stores: Stores) -> None:
    first, second, alias = unique("blue"), unique("green"), unique("catalog")
    blue, green = stores.connected(first, SPACE), stores.connected(second, SPACE)
    blue.point_alias(alias)
    with pytest.raises(StartupError) as caught:
        green.point_alias(first)
    message = str(caught.value)
    assert f"{first!r} is a collection" in message and "not an alias" in message and "another alias name" in message
    with pytest.raises(StartupError, match="needs a name of its own"):
        green.point_alias(second)
    put(blue, "still-there", 1)
    assert keys(blue) == {"still-there"}  # the collection named is untouched
    assert points_at(stores, alias) == first  # and the alias stays where it was


# --- a store on an alias ----------------------------------------------------------------
def test_a_store_on_an_alias_uses_the_collection_behind_it(stores: Stores) -> None:
    first, alias = unique("blue"), unique("catalog")
    blue = stores.connected(first, SPACE)
    put(blue, "before", 1)
    blue.point_alias(alias)
    via = stores.connected(alias, SPACE)
    assert (via.collection, via.alias) == (first, alias)
    assert keys(via) == {"before"}
    put(via, "through-the-alias", 2)
    assert keys(blue) == {"before", "through-the-alias"}  # written into the collection behind the alias
    client = stores.client()
    try:
        assert alias not in client.list_collections()
    finally:
        client.close()


def test_a_store_on_an_alias_of_another_space_waits_for_it_to_come_back(stores: Stores) -> None:
    first, second, alias = unique("blue"), unique("green"), unique("catalog")
    stores.connected(first, OTHER).point_alias(alias)
    green = stores.connected(second, SPACE)
    put(green, "green-record", 3)
    waiting = stores.open(alias, SPACE)
    with pytest.raises(CollectionMoved) as caught:
        waiting.connect()
    moved = caught.value
    assert moved.reason == "collection_moved"
    for part in (repr(alias), repr(first), OTHER.digest, OTHER.summary, SPACE.digest, "Restart the service"):
        assert part in moved.msg, part
    with pytest.raises(CollectionMoved):  # looked a moment ago: answered without asking Milvus again
        waiting.ping()

    green.point_alias(alias)
    time.sleep(ALIAS_CHECK)
    waiting.ping()
    assert (waiting.collection, waiting.alias) == (second, alias)
    assert keys(waiting) == {"green-record"}


def test_a_moved_alias_is_followed_within_the_same_space_and_refused_across_spaces(
    stores: Stores, caplog: pytest.LogCaptureFixture
) -> None:
    first, second, third, alias = unique("blue"), unique("green"), unique("other"), unique("catalog")
    blue, green, other = (
        stores.connected(first, SPACE),
        stores.connected(second, SPACE),
        stores.connected(third, OTHER),
    )
    put(blue, "blue-record", 1)
    put(green, "green-record", 2)
    put(other, "other-record", 3)
    blue.point_alias(alias)
    via = stores.connected(alias, SPACE)
    assert keys(via) == {"blue-record"}

    caplog.set_level(logging.WARNING, logger="service.store.connection")
    green.point_alias(alias)  # the same space: followed
    time.sleep(ALIAS_CHECK)
    assert keys(via) == {"green-record"} and via.collection == second
    assert f"alias {alias!r} moved from collection {first!r} to {second!r}" in caplog.text

    other.point_alias(alias)  # another space: refused, never answered from
    time.sleep(ALIAS_CHECK)
    with pytest.raises(CollectionMoved, match=third):
        keys(via)
    with pytest.raises(CollectionMoved):
        via.ping()
    assert via.collection == second  # never switched to the other space's collection

    green.point_alias(alias)  # back: serves again
    time.sleep(ALIAS_CHECK)
    via.ping()
    assert keys(via) == {"green-record"}


def test_a_failed_call_looks_at_the_alias_at_once(stores: Stores, caplog: pytest.LogCaptureFixture) -> None:
    # The collection behind the alias is dropped right after the alias moved: the next call fails on it and,
    # without waiting for ALIAS_CHECK, finds the alias's new collection and answers from there.
    first, second, alias = unique("blue"), unique("green"), unique("catalog")
    blue, green = stores.connected(first, SPACE), stores.connected(second, SPACE)
    put(green, "green-record", 2)
    blue.point_alias(alias)
    client = stores.client()
    caplog.set_level(logging.INFO, logger="service.store.connection")
    try:
        via = stores.connected(alias, SPACE)  # it has just looked where the alias points
        green.point_alias(alias)
        client.drop_collection(first)
        assert keys(via) == {"green-record"}
    finally:
        client.close()
    assert f"a call on collection {first!r} failed" in caplog.text  # the failure itself made it look
    assert f"moved from collection {first!r} to {second!r}" in caplog.text


# --- the handover, through real services on the server ---------------------------------
@pytest.fixture(scope="module")
def padded(tmp_path_factory: pytest.TempPathFactory) -> Embedder:
    """ResNet50 (random weights) with IMAGE_RESIZE=pad: another embedding space from the same network."""
    return load_embedder(make_settings(tmp_path_factory.mktemp("padded"), image_resize=ResizeMode.PAD))


@dataclass
class Answer:
    """One search a client thread sent: which service, when, the status, the top key (or the message)."""

    service: str
    round: int
    at: float
    status: int
    top: str


def searches(services: dict[str, LiveService], stop: threading.Event, seeds: range) -> Callable[[], list[Answer]]:
    """Search each service for each seed's photo in turn until `stop`; returns what collects the answers."""
    answers: list[Answer] = []

    def run() -> None:
        i = 0
        while not stop.is_set():
            seed = seeds[i % len(seeds)]
            for name, live in services.items():
                r = live.post("search/file", files={"file": ("q.jpg", photo(seed))}, data={"limit": "1"}, timeout=60)
                body = r.json()
                top = body["data"][0]["key"] if r.status_code == 200 and body["data"] else body["msg"]
                answers.append(Answer(name, i, time.monotonic(), r.status_code, f"{seed}:{top}"))
            i += 1

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def collect() -> list[Answer]:
        stop.set()
        thread.join(timeout=120)
        return answers

    return collect


@pytest.mark.server
def test_switching_the_alias_hands_the_reads_over_to_the_new_space(
    embedder: Embedder,
    padded: Embedder,
    milvus_server: str,
    start_service: Callable[..., LiveService],
    tmp_path: Path,
) -> None:
    blue_name, green_name, alias = unique("blue"), unique("green"), unique("catalog")
    seeds = range(6)
    # The new collection, made and filled by a service of the new space (as a reindex would).
    green_writer = start_service(
        padded, milvus_uri=milvus_server, milvus_collection=green_name, image_resize=ResizeMode.PAD
    )
    for seed in seeds:
        added = green_writer.post("add/file", files={"file": ("p.jpg", photo(seed))}, data={"key": f"green-{seed}"})
        assert added.status_code == 200, added.text
    green_settings = make_settings(tmp_path, milvus_uri=milvus_server, milvus_collection=green_name)
    green_store = VectorStore(
        green_settings, padded.dim, SpaceTag(padded.fingerprint.digest, padded.fingerprint.summary)
    )

    # The old collection behind the alias; the old-space service reads (and writes) through the alias.
    blue_store = VectorStore(
        make_settings(tmp_path, milvus_uri=milvus_server, milvus_collection=blue_name),
        embedder.dim,
        SpaceTag(embedder.fingerprint.digest, embedder.fingerprint.summary),
    )
    try:
        blue_store.connect()
        blue_store.point_alias(alias)
        blue = start_service(milvus_uri=milvus_server, milvus_collection=alias)
        for seed in seeds:
            added = blue.post("add/file", files={"file": ("p.jpg", photo(seed))}, data={"key": f"blue-{seed}"})
            assert added.status_code == 200, added.text
        ready = blue.get("ready").json()["data"]["milvus"]
        assert (ready["collection"], ready["alias"]) == (blue_name, alias)

        # The new-space service started on the alias waits, saying why.
        green = start_service(padded, milvus_uri=milvus_server, milvus_collection=alias, image_resize=ResizeMode.PAD)
        waiting = green.get("ready")
        assert waiting.status_code == 503
        for part in (repr(alias), repr(blue_name), embedder.fingerprint.digest, "Restart the service"):
            assert part in waiting.json()["msg"], part

        stop = threading.Event()
        collect = searches({"blue": blue, "green": green}, stop, seeds)
        time.sleep(2 * ALIAS_CHECK)
        switched = time.monotonic()
        assert green_store.point_alias(alias) == f"alias {alias}: {blue_name} -> {green_name}"
        # A write looks where the alias points first: none lands in the old collection after the switch.
        late = blue.post("add/file", files={"file": ("p.jpg", photo(50))}, data={"key": "late"})
        assert late.status_code == 503 and repr(green_name) in late.json()["msg"], late.text
        time.sleep(4 * ALIAS_CHECK)  # both keep being asked for a while after the handover
        answers = collect()
    finally:
        green_store.close()
        blue_store.close()

    # Never a failure other than "not here" (503), never an answer from the other space's collection.
    assert {a.status for a in answers} <= {200, 503}, [a for a in answers if a.status not in (200, 503)][:3]
    for a in answers:
        if a.status == 200:
            seed, top = a.top.split(":", 1)
            assert top == f"{a.service}-{seed}", a  # right result from its own space's collection
    blue_answers = [a for a in answers if a.service == "blue"]
    green_answers = [a for a in answers if a.service == "green"]
    # The old-space service answered before the switch, and only 503 collection_moved a while after it.
    assert any(a.status == 200 and a.at < switched for a in blue_answers)
    late_blue = [a for a in blue_answers if a.at > switched + 2 * ALIAS_CHECK]
    assert late_blue and all(a.status == 503 and repr(green_name) in a.top for a in late_blue), late_blue[:3]
    # The new-space service waited before the switch and serves within a fraction of a second after it.
    assert all(a.status == 503 for a in green_answers if a.at < switched)
    first_served = min(a.at for a in green_answers if a.status == 200)
    assert first_served - switched < ALIAS_CHECK, first_served - switched
    assert all(a.status == 200 for a in green_answers if a.at > first_served)
    # A client that asks the other service on a 503 was answered in every round: no moment without answers.
    rounds = {a.round for a in answers}
    unanswered = [r for r in rounds if not any(a.status == 200 for a in answers if a.round == r)]
    assert not unanswered, [a for a in answers if a.round in unanswered]
    ready = green.get("ready")
    assert ready.status_code == 200 and ready.json()["data"]["milvus"]["collection"] == green_name
    moved = blue.get("ready")
    assert moved.status_code == 503 and padded.fingerprint.digest in moved.json()["msg"]
    # Every endpoint that touches the store says the same, writes included; the old collection kept its records.
    for response in (
        blue.get("api/image/sim/count"),
        blue.post("get/key", json={"key": ["blue-0"]}),
        blue.post("list", json={}),
        blue.post("search/id", json={"id": 1}),
        blue.post("del/key", json={"key": ["blue-0"]}),
    ):
        assert response.status_code == 503 and repr(alias) in response.json()["msg"], response.text
    assert green.count() == len(seeds)
    old = VectorStore(make_settings(tmp_path, milvus_uri=milvus_server, milvus_collection=blue_name), embedder.dim)
    try:
        assert old.count_all() == len(seeds)  # neither the late add nor the delete reached it
    finally:
        old.close()


def test_a_service_started_on_an_alias_of_another_space_waits_not_ready(
    embedder: Embedder, start_service: Callable[..., LiveService], tmp_path: Path
) -> None:
    # On Milvus Lite: the service does not exit; it answers 503 with the reason until the alias comes to its space.
    first, alias = unique("blue"), unique("catalog")
    uri = str(tmp_path / "lite.db")
    other = VectorStore(make_settings(tmp_path, milvus_uri=uri, milvus_collection=first), embedder.dim, OTHER)
    try:
        other.connect()
        other.point_alias(alias)
    finally:
        other.close()
    waiting = start_service(milvus_uri=uri, milvus_collection=alias)
    for response in (
        waiting.get("ready"),
        waiting.post("search/file", files={"file": ("q.jpg", photo(1))}),
        waiting.post("add/file", files={"file": ("p.jpg", photo(1))}, data={"key": "k"}),
        waiting.get("api/image/sim/count"),
    ):
        assert response.status_code == 503, response.text
        message = response.json()["msg"]
        assert repr(alias) in message and repr(first) in message and OTHER.summary in message, message
    assert waiting.get("health").status_code == 200  # alive, only not ready
