"""The agents a router chooses between: names, measured (or declared) costs, descriptions."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from quantswarm.errors import ConfigError


@dataclass
class AgentSpec:
    """One agent of the swarm; ``cost`` is per item in the swarm's ``cost_unit``."""

    name: str
    cost: float
    description: str = ""
    accuracy: float | None = None  # measured on the labeled items (results-table swarms)
    model_file: str = ""


@dataclass
class Swarm:
    """Agents sorted cheapest first, the cost unit they share, and the agent for unsolved items."""

    agents: list[AgentSpec]
    cost_unit: str
    strongest: str
    router_model: str = ""
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.agents) < 2:
            raise ConfigError("a swarm needs at least two agents to route between")
        names = [a.name for a in self.agents]
        if len(set(names)) != len(names):
            raise ConfigError(f"agent names must be unique, got {names}")
        self.agents = sorted(self.agents, key=lambda a: (a.cost, a.name))
        if self.strongest not in names:
            raise ConfigError(f"strongest/unsolved agent {self.strongest!r} is not one of {names}")

    @property
    def names(self) -> list[str]:
        return [a.name for a in self.agents]

    @property
    def cheapest(self) -> str:
        return self.agents[0].name

    def cost(self, name: str) -> float:
        return self.by_name()[name].cost

    def by_name(self) -> dict[str, AgentSpec]:
        return {a.name: a for a in self.agents}

    def describe(self) -> str:
        """One line per agent, cheapest first: the text the router LM sees."""
        lines = []
        for a in self.agents:
            acc = f", accuracy {a.accuracy:.0%}" if a.accuracy is not None else ""
            lines.append(f"- {a.name}: {a.description or 'no description'} (cost {a.cost:.3g} {self.cost_unit}{acc})")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"agents": [asdict(a) for a in self.agents], "cost_unit": self.cost_unit, "strongest": self.strongest,
                "router_model": self.router_model}

    @classmethod
    def from_dict(cls, data: dict, where: str = "swarm") -> Swarm:
        if not isinstance(data, dict) or not isinstance(data.get("agents"), list):
            raise ConfigError(f"{where}: expected an object with an 'agents' list")
        known = {"agents", "cost_unit", "strongest", "router_model"}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"{where}: unknown keys {sorted(unknown)}; allowed: {sorted(known)}")
        agents = []
        for n, a in enumerate(data["agents"]):
            if not isinstance(a, dict) or "name" not in a or "cost" not in a:
                raise ConfigError(f"{where}: agents[{n}] needs 'name' and 'cost'")
            extra = set(a) - {"name", "cost", "description", "accuracy", "model_file"}
            if extra:
                raise ConfigError(f"{where}: agents[{n}] has unknown keys {sorted(extra)}")
            try:
                cost = float(a["cost"])
            except (TypeError, ValueError):
                raise ConfigError(f"{where}: agents[{n}].cost must be a number") from None
            if cost < 0:
                raise ConfigError(f"{where}: agents[{n}].cost must be >= 0")
            agents.append(AgentSpec(str(a["name"]), cost, str(a.get("description", "")), a.get("accuracy"),
                                    str(a.get("model_file", ""))))
        strongest = data.get("strongest") or max(agents, key=lambda a: a.cost).name
        return cls(agents, str(data.get("cost_unit", "relative")), strongest, str(data.get("router_model", "")))


def load_swarm(path: str | Path) -> Swarm:
    """Read a swarm spec JSON (``agents``: name, cost, description; ``strongest``; ``cost_unit``)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no such swarm spec; give --swarm FILE.json")
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{p}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    return Swarm.from_dict(data, str(p))
