"""The NATS JetStream task bus: tasks in on ``tasks.new``, results out on ``results.completed``.

* One stream (``bus.stream``) holds the three subjects; its dedup window makes the NATS message id
  (= task id) unique, so a task published twice is stored once.
* Every host pulls from one durable consumer (``bus.durable``): the hosts form a queue group and
  share the work. A task is acked only after its result is published; the result's message id is
  ``result:<task id>``, so a redelivered task still yields one stored result.
* A malformed message (not JSON, bad fields, id mismatch, unknown agent) goes to ``tasks.dead`` with
  the reason and is acked. A task that fails on the swarm (or hits a bug here) is nak'ed with a
  growing delay and redelivered; its ``bus.max_deliver``-th failure dead-letters it with the last
  error. A task whose worker died ``max_deliver`` times is dead-lettered on the next delivery, unrun
  (the consumer allows ``max_deliver + 1``). No task is lost: each ends as one result or one dead letter.
* Nothing runs twice: while a task runs its worker sends a JetStream progress heartbeat
  (``in_progress``) every ``ack_wait_s / 3``, so a long generation is not redelivered; a redelivery of a
  task this host is still running, or has answered (ack lost in a NATS restart), is not run again.
* The stream is bounded (``max_age_s``, ``max_msgs``, ``max_bytes``); a full stream refuses new
  messages (publish fails) instead of dropping stored tasks.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections import OrderedDict
from collections.abc import Callable
from urllib.parse import urlsplit

import nats
from nats.js import api
from pydantic import ValidationError

from quantswarm.errors import ConfigError, QuantswarmError
from serving.schemas import BusResult, BusTask, DeadLetter
from serving.swarm import BadRequest, Swarm
from serving.swarm_config import BusSpec

MSG_ID = "Nats-Msg-Id"


async def reachable(url: str, timeout: float = 2.0) -> bool:
    """Whether something accepts TCP connections at any server of a ``nats://host:port[,...]`` URL."""
    for one in url.split(","):
        parts = urlsplit(one.strip())
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(parts.hostname or "127.0.0.1",
                                                                       parts.port or 4222), timeout)
        except (OSError, TimeoutError, ValueError):
            continue
        writer.close()
        return True
    return False


async def connect(spec: BusSpec, timeout: float = 5.0, log: Callable[[str], None] | None = None):
    """Connect to ``bus.url``; ConfigError (one line) when no server answers.

    Once connected the client reconnects for ever (a restarted nats-server is picked up again), and
    connection trouble is reported as one line per change through ``log`` instead of nats-py's tracebacks.
    """
    if not await reachable(spec.url, timeout):
        raise ConfigError(f"bus.url: nothing listens at {spec.url}; start nats-server with JetStream "
                          "(`nats-server -js`) or fix the URL")
    said = {"last": ""}

    def say(line: str) -> None:
        if log is not None and line != said["last"]:
            said["last"] = line
            log(line)

    async def on_error(exc: Exception) -> None:
        say(f"bus: NATS {type(exc).__name__}: {exc}".rstrip(": "))

    async def on_disconnect() -> None:
        say(f"bus: disconnected from {spec.url}; reconnecting")

    async def on_reconnect() -> None:
        say(f"bus: reconnected to {spec.url}")

    try:
        return await nats.connect(spec.url, connect_timeout=timeout, allow_reconnect=True, max_reconnect_attempts=-1,
                                  reconnect_time_wait=0.5, error_cb=on_error, disconnected_cb=on_disconnect,
                                  reconnected_cb=on_reconnect)
    except Exception as exc:  # a listener that does not speak NATS
        raise ConfigError(f"bus.url: {spec.url} does not answer as a NATS server ({type(exc).__name__}); "
                          "fix the URL") from None


async def check_bus(spec: BusSpec, timeout: float = 5.0) -> None:
    """Connect and create/update the stream once; ConfigError (one line) without a JetStream server at ``bus.url``."""
    nc = await connect(spec, timeout)
    try:
        await ensure_stream(nc.jetstream(timeout=timeout), spec)
    except (nats.errors.Error, TimeoutError) as exc:
        raise ConfigError(f"bus.url: the NATS server at {spec.url} has no JetStream or refused the stream "
                          f"{spec.stream!r} ({type(exc).__name__}: {exc}); run nats-server with -js") from None
    finally:
        await close(nc)


def stream_config(spec: BusSpec) -> api.StreamConfig:
    """The stream holding tasks, results and dead letters, with its dedup window and retention limits."""
    return api.StreamConfig(name=spec.stream, subjects=[spec.tasks_subject, spec.results_subject, spec.dead_subject],
                            storage=api.StorageType.FILE, duplicate_window=spec.duplicate_window_s,
                            max_age=spec.max_age_s, max_msgs=spec.max_msgs, max_bytes=spec.max_bytes,
                            discard=api.DiscardPolicy.NEW)


async def ensure_stream(js, spec: BusSpec) -> None:
    """Create the stream, or update it when its subjects or limits differ from the spec."""
    cfg = stream_config(spec)
    try:
        info = await js.stream_info(spec.stream)
    except nats.js.errors.NotFoundError:
        await js.add_stream(cfg)
        return
    have = info.config
    if (set(have.subjects or []) != set(cfg.subjects) or have.max_age != cfg.max_age or have.max_msgs != cfg.max_msgs
            or have.max_bytes != cfg.max_bytes or have.discard != cfg.discard
            or have.duplicate_window != cfg.duplicate_window):
        await js.update_stream(cfg)


def consumer_config(spec: BusSpec, concurrency: int) -> api.ConsumerConfig:
    """The durable pull consumer every host shares: explicit acks, bounded deliveries (one spare: see module doc)."""
    return api.ConsumerConfig(durable_name=spec.durable, filter_subject=spec.tasks_subject,
                              ack_policy=api.AckPolicy.EXPLICIT, ack_wait=spec.ack_wait_s,
                              max_deliver=spec.max_deliver + 1, max_ack_pending=max(1000, 4 * concurrency))


async def publish_task(js, spec: BusSpec, task: BusTask | dict) -> bool:
    """Publish a task with message id = task id; returns False when the stream dropped it as a duplicate."""
    t = task if isinstance(task, BusTask) else BusTask.model_validate(task)
    ack = await js.publish(spec.tasks_subject, t.model_dump_json(exclude_none=True).encode(),
                           headers={MSG_ID: t.id})
    return not ack.duplicate


async def publish_raw(js, spec: BusSpec, payload: bytes, msg_id: str | None = None) -> None:
    """Publish arbitrary bytes on the task subject (for tests of malformed input)."""
    await js.publish(spec.tasks_subject, payload, headers={MSG_ID: msg_id} if msg_id else None)


class BusWorker:
    """Pulls tasks from the durable consumer and answers them on the swarm, ``concurrency`` at a time."""

    def __init__(self, swarm: Swarm, spec: BusSpec | None = None, log: Callable[[str], None] = print):
        self.swarm = swarm
        self.spec = spec or swarm.cfg.bus
        self.log = log
        self.concurrency = self.spec.concurrency or swarm.cfg.total_slots()
        self.host = socket.gethostname()
        self.completed = 0
        self.dead = 0
        self.retried = 0
        self.skipped = 0  # redeliveries not run again (still running here, or already answered here)
        self.executions: dict[str, int] = {}  # task id -> times this worker ran it on the swarm
        # (task id, delivery, "start" | "answered" | "failed" | "dead") as a run starts and ends (benchmarks)
        self.on_run: Callable[[str, int, str], None] = lambda task_id, delivery, event: None
        self._running: set[str] = set()
        self._answered: OrderedDict[str, None] = OrderedDict()  # recent task ids answered here

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Consume until ``stop`` is set (or the task is cancelled); in-flight tasks finish or are nak'ed."""
        stop = stop or asyncio.Event()
        nc = await connect(self.spec, log=self.log)
        sub = None
        try:
            js = nc.jetstream()
            await ensure_stream(js, self.spec)
            try:  # create, or update an existing durable to this spec's ack_wait / max_deliver
                await js.add_consumer(self.spec.stream, consumer_config(self.spec, self.concurrency))
            except nats.js.errors.APIError as exc:
                raise ConfigError(f"bus.durable: cannot create or update consumer {self.spec.durable!r} on stream "
                                  f"{self.spec.stream!r} ({exc.description}); delete it or pick another "
                                  "bus.durable") from None
            sub = await js.pull_subscribe(self.spec.tasks_subject, durable=self.spec.durable, stream=self.spec.stream)
            self.log(f"bus: consuming {self.spec.tasks_subject} on {self.spec.url} as durable {self.spec.durable!r} "
                     f"({self.concurrency} in flight)")
            slots = asyncio.Semaphore(self.concurrency)
            running: set[asyncio.Task] = set()
            try:
                while not stop.is_set():
                    free = self.concurrency - len(running)
                    if free <= 0:
                        await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                        continue
                    try:
                        msgs = await sub.fetch(batch=free, timeout=0.5)
                    except (TimeoutError, nats.errors.TimeoutError):
                        continue
                    except (nats.errors.Error, OSError):  # NATS restarting: the client reconnects
                        await asyncio.sleep(0.5)
                        continue
                    for msg in msgs:
                        t = asyncio.create_task(self._guarded(js, msg, slots))
                        running.add(t)
                        t.add_done_callback(running.discard)
            finally:
                if running:
                    await asyncio.gather(*running, return_exceptions=True)
        finally:
            await close(nc, sub)

    async def _guarded(self, js, msg, slots: asyncio.Semaphore) -> None:
        beat = asyncio.create_task(self._heartbeat(msg))
        try:
            async with slots:
                await self.handle(js, msg)
        except asyncio.CancelledError:
            await _quiet(msg.nak())
            raise
        except Exception as exc:  # a bug here (or NATS gone): redeliver, bounded by max_deliver
            n = _deliveries(msg)
            self.log(f"bus: task handling failed on delivery {n} ({type(exc).__name__}: {exc})")
            if n >= self.spec.max_deliver:
                await _quiet(self._dead(js, msg, f"failed {n} deliveries: {type(exc).__name__}: {exc}",
                                        (msg.headers or {}).get(MSG_ID)))
            else:
                await _quiet(msg.nak(delay=min(2.0 * n, 10.0)))
        finally:
            beat.cancel()

    async def _heartbeat(self, msg) -> None:
        """Tell JetStream the task is still being worked on, every ack_wait / 3, until cancelled."""
        while True:
            await asyncio.sleep(self.spec.ack_wait_s / 3)
            await _quiet(msg.in_progress())

    async def _dead(self, js, msg, reason: str, task_id: str | None) -> None:
        raw = msg.data[:2000].decode(errors="replace")
        letter = DeadLetter(id=task_id, reason=reason, raw=raw, deliveries=_deliveries(msg))
        headers = {MSG_ID: f"dead:{task_id}"} if task_id else None
        await js.publish(self.spec.dead_subject, letter.model_dump_json().encode(), headers=headers)
        await msg.ack()
        self.dead += 1
        self.swarm.metrics.inc("quantswarm_bus_tasks_total", outcome="dead")
        self.log(f"bus: dead-lettered {task_id or '(no id)'}: {reason}")

    async def handle(self, js, msg) -> None:
        """Answer one message: result then ack; or dead letter then ack; or nak for a retry."""
        header_id = (msg.headers or {}).get(MSG_ID)
        try:
            data = json.loads(msg.data)
        except ValueError as exc:
            return await self._dead(js, msg, f"not JSON: {exc}", header_id)
        if not isinstance(data, dict):
            return await self._dead(js, msg, "not a JSON object", header_id)
        try:
            task = BusTask.model_validate(data)
            req = task.chat_request()
        except (ValidationError, ValueError) as exc:
            if isinstance(exc, ValidationError):
                e = exc.errors()[0]
                reason = f"invalid task: {'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}"
            else:
                reason = f"invalid task: {exc}"
            tid = data.get("id") if isinstance(data.get("id"), str) else header_id
            return await self._dead(js, msg, reason, tid)
        if header_id is not None and header_id != task.id:
            return await self._dead(js, msg, f"message id {header_id!r} differs from task id {task.id!r}", task.id)
        n = _deliveries(msg)
        if task.id in self._answered:  # answered here, the ack was lost: the stored result stands
            self.skipped += 1
            return await msg.ack()
        if task.id in self._running:  # a redelivery while this host still runs it: keep the running one
            self.skipped += 1
            return
        if n > self.spec.max_deliver:
            return await self._dead(js, msg, f"no answer after {n - 1} deliveries (its worker stopped each time)",
                                    task.id)
        self._running.add(task.id)
        try:
            await self._execute(js, msg, task, req, n)
        finally:
            self._running.discard(task.id)

    async def _execute(self, js, msg, task: BusTask, req, n: int) -> None:
        """Run a valid task on delivery ``n``: result, remember, ack; or dead letter / nak on failure."""
        self.executions[task.id] = self.executions.get(task.id, 0) + 1
        self.on_run(task.id, n, "start")
        try:
            out = await self.swarm.complete(req)
        except BadRequest as exc:
            self.on_run(task.id, n, "dead")
            return await self._dead(js, msg, str(exc), task.id)
        except QuantswarmError as exc:
            if n >= self.spec.max_deliver:
                self.on_run(task.id, n, "dead")
                return await self._dead(js, msg, f"failed {n} deliveries: {exc}", task.id)
            self.on_run(task.id, n, "failed")
            self.retried += 1
            self.swarm.metrics.inc("quantswarm_bus_tasks_total", outcome="retried")
            await msg.nak(delay=min(2.0 * n, 10.0))
            return
        result = BusResult(id=task.id, agent=out.agent, text=out.text, prompt_tokens=out.prompt_tokens,
                           completion_tokens=out.completion_tokens, latency_ms=out.latency_ms,
                           route_source=out.route.source, route_ms=out.route.latency_ms, fallbacks=out.fallbacks,
                           failovers=out.failovers, worker_host=self.host, meta=task.meta)
        await _publish_until_stored(js, self.spec.results_subject, result.model_dump_json().encode(),
                                    f"result:{task.id}", timeout=max(60.0, 2 * self.spec.ack_wait_s))
        self._answered[task.id] = None
        while len(self._answered) > 100_000:
            self._answered.popitem(last=False)
        self.on_run(task.id, n, "answered")
        await msg.ack()  # only after the result is stored
        self.completed += 1
        self.swarm.metrics.inc("quantswarm_bus_tasks_total", outcome="completed")


async def _publish_until_stored(js, subject: str, data: bytes, msg_id: str, timeout: float) -> None:
    """Publish until JetStream stores it (or dedups it), riding out a nats-server restart for ``timeout`` s.

    Re-publishing is safe: the message id makes a second copy a duplicate. Raises the last error after timeout.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            await js.publish(subject, data, headers={MSG_ID: msg_id}, timeout=2.0)
            return
        except (nats.errors.Error, TimeoutError, OSError):
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.5)


def _deliveries(msg) -> int:
    """How many times JetStream has delivered this message (1 for the first delivery)."""
    try:
        return int(msg.metadata.num_delivered)
    except Exception:  # not a JetStream message
        return 1


async def close(nc, *subs) -> None:
    """Unsubscribe, flush pending acks/publishes, close (a drain would wait out its timeout on a pull subscription)."""
    for s in subs:
        if s is not None:
            await _quiet(s.unsubscribe())
    await _quiet(nc.flush(timeout=5))
    await nc.close()


async def _quiet(coro) -> None:
    try:
        await coro
    except Exception:
        pass


async def reader(js, spec: BusSpec, subject: str, from_start: bool = True):
    """An ephemeral pull consumer over ``subject`` (all stored messages, or only new ones), without acks.

    Pull, not push: a push consumer with flow control can stall a slow reader.
    """
    policy = api.DeliverPolicy.ALL if from_start else api.DeliverPolicy.NEW
    return await js.pull_subscribe(subject, durable=None, stream=spec.stream,
                                   config=api.ConsumerConfig(deliver_policy=policy, ack_policy=api.AckPolicy.NONE,
                                                             inactive_threshold=60.0))


async def collect(js, spec: BusSpec, subject: str, expect: int, timeout: float,
                  on_message: Callable[[dict], None] | None = None) -> list[dict]:
    """Read up to ``expect`` JSON messages stored on ``subject`` (from the start of the stream) within ``timeout``."""
    sub = await reader(js, spec, subject)
    out: list[dict] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        while len(out) < expect and loop.time() < deadline:
            try:
                msgs = await sub.fetch(batch=expect - len(out), timeout=min(1.0, max(deadline - loop.time(), 0.05)))
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            for m in msgs:
                item = json.loads(m.data)
                out.append(item)
                if on_message:
                    on_message(item)
    finally:
        await _quiet(sub.unsubscribe())
    return out
