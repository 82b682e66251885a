"""The NATS JetStream task bus: tasks in on ``tasks.new``, results out on ``results.completed``.

* One stream (``bus.stream``) holds the three subjects; its dedup window makes the NATS message id
  (= task id) unique, so a task published twice is stored once.
* Every host pulls from one durable consumer (``bus.durable``): the hosts form a queue group and
  share the work. A task is acked only after its result is published; the result's message id is
  ``result:<task id>``, so a redelivered task still yields one stored result.
* A malformed message (not JSON, bad fields, id mismatch, unknown agent) goes to ``tasks.dead`` with
  the reason and is acked. A task that fails on the swarm is nak'ed and redelivered; after
  ``bus.max_deliver`` deliveries it is dead-lettered with the last error. No task is lost: each one
  ends as exactly one result or one dead letter.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable

import nats
from nats.js import api
from pydantic import ValidationError

from quantswarm.errors import ConfigError, QuantswarmError
from serving.schemas import BusResult, BusTask, DeadLetter
from serving.swarm import BadRequest, Swarm
from serving.swarm_config import BusSpec

MSG_ID = "Nats-Msg-Id"


async def connect(spec: BusSpec, timeout: float = 5.0):
    """Connect to ``bus.url``; ConfigError (one line) when no server answers."""
    try:
        return await nats.connect(spec.url, connect_timeout=timeout, max_reconnect_attempts=2,
                                  allow_reconnect=True)
    except Exception as exc:  # nats raises NoServersError / OSError / TimeoutError
        raise ConfigError(f"bus.url: cannot reach NATS at {spec.url} ({type(exc).__name__}); start nats-server "
                          "with JetStream (`nats-server -js`) or fix the URL") from None


async def ensure_stream(js, spec: BusSpec) -> None:
    """Create (or update) the stream that holds tasks, results and dead letters."""
    subjects = [spec.tasks_subject, spec.results_subject, spec.dead_subject]
    cfg = api.StreamConfig(name=spec.stream, subjects=subjects, storage=api.StorageType.FILE,
                           duplicate_window=spec.duplicate_window_s)
    try:
        info = await js.stream_info(spec.stream)
    except nats.js.errors.NotFoundError:
        await js.add_stream(cfg)
        return
    if set(info.config.subjects or []) != set(subjects):
        await js.update_stream(cfg)


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

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Consume until ``stop`` is set (or the task is cancelled); in-flight tasks finish or are nak'ed."""
        stop = stop or asyncio.Event()
        nc = await connect(self.spec)
        sub = None
        try:
            js = nc.jetstream()
            await ensure_stream(js, self.spec)
            sub = await js.pull_subscribe(
                self.spec.tasks_subject, durable=self.spec.durable, stream=self.spec.stream,
                config=api.ConsumerConfig(ack_policy=api.AckPolicy.EXPLICIT, ack_wait=self.spec.ack_wait_s,
                                          max_deliver=-1, max_ack_pending=max(1000, 4 * self.concurrency)),
            )
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
        async with slots:
            try:
                await self.handle(js, msg)
            except asyncio.CancelledError:
                await _quiet(msg.nak())
                raise
            except Exception as exc:  # never lose a task to a bug here: let JetStream redeliver it
                self.log(f"bus: task handling failed ({type(exc).__name__}: {exc}); nak")
                await _quiet(msg.nak(delay=1.0))

    async def _dead(self, js, msg, reason: str, task_id: str | None) -> None:
        raw = msg.data[:2000].decode(errors="replace")
        letter = DeadLetter(id=task_id, reason=reason, raw=raw, deliveries=msg.metadata.num_delivered)
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
        try:
            out = await self.swarm.complete(req)
        except BadRequest as exc:
            return await self._dead(js, msg, str(exc), task.id)
        except QuantswarmError as exc:
            n = msg.metadata.num_delivered
            if n >= self.spec.max_deliver:
                return await self._dead(js, msg, f"failed {n} deliveries: {exc}", task.id)
            self.retried += 1
            self.swarm.metrics.inc("quantswarm_bus_tasks_total", outcome="retried")
            await msg.nak(delay=min(2.0 * n, 10.0))
            return
        result = BusResult(id=task.id, agent=out.agent, text=out.text, prompt_tokens=out.prompt_tokens,
                           completion_tokens=out.completion_tokens, latency_ms=out.latency_ms,
                           route_source=out.route.source, route_ms=out.route.latency_ms, fallbacks=out.fallbacks,
                           failovers=out.failovers,
                           worker_host=self.host, meta=task.meta)
        await js.publish(self.spec.results_subject, result.model_dump_json().encode(),
                         headers={MSG_ID: f"result:{task.id}"})
        await msg.ack()  # only after the result is stored
        self.completed += 1
        self.swarm.metrics.inc("quantswarm_bus_tasks_total", outcome="completed")


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
