"""The jobs' verbs (``eval``, ``router``, ``repair``, ``serve``, ``bench``, ``monitor``), found by entry point.

Each entry point of the group ``quantswarm.jobs`` (declared in ``pyproject.toml``) names one verb and the
``register(app)`` function of the job's ``cli`` module that adds it to a Typer app. The core never imports
a job package: :class:`JobsGroup` lists the verbs from the installed metadata and imports a job's CLI only
when one of its verbs is asked for, so ``quantswarm models list`` or ``doctor`` load no job at all.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points

import typer
from typer.core import TyperGroup

GROUP = "quantswarm.jobs"


def job_entry_points() -> dict[str, EntryPoint]:
    """Verb -> entry point of every installed job verb."""
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def _stub(verb: str, why: str) -> typer.Typer:
    app = typer.Typer()

    @app.command(verb, help=f"{verb}: not installed ({why})",
                 context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def _missing() -> None:
        typer.echo(f"quantswarm {verb}: not installed ({why}); reinstall quantswarm (pip install -e .)", err=True)
        raise typer.Exit(2)

    return app


class JobsGroup(TyperGroup):
    """The top-level group: the core's own verbs, then each job verb, its CLI imported on first use."""

    _groups: dict[str, TyperGroup] = {}  # entry point value -> the click group its register() built

    def list_commands(self, ctx: typer.Context) -> list[str]:
        core = super().list_commands(ctx)
        return core + [verb for verb in job_entry_points() if verb not in core]

    def get_command(self, ctx: typer.Context, cmd_name: str):
        cmd = super().get_command(ctx, cmd_name)
        if cmd is not None:
            return cmd
        eps = job_entry_points()
        if not eps:  # an install from before the entry points: say how to get the verbs back
            return typer.main.get_group(_stub(cmd_name, "no job verbs registered")).get_command(ctx, cmd_name)
        ep = eps.get(cmd_name)
        return None if ep is None else self._job_group(ep).get_command(ctx, cmd_name)

    def _job_group(self, ep: EntryPoint) -> TyperGroup:
        group = self._groups.get(ep.value)
        if group is not None:
            return group
        try:
            register = ep.load()
        except ModuleNotFoundError as exc:
            if exc.name is None or not (ep.module == exc.name or ep.module.startswith(f"{exc.name}.")):
                raise
            return typer.main.get_group(_stub(ep.name, f"no module {exc.name}"))
        app = typer.Typer()
        register(app)
        group = self._groups[ep.value] = typer.main.get_group(app)
        help_without_verb(group)
        return group


def help_without_verb(group: TyperGroup) -> None:
    """A group called without a verb prints its help and exits 0 (``no_args_is_help`` exits 2 with the help on
    stderr, which reads as a failure to a newcomer typing ``quantswarm models``)."""
    for sub in group.commands.values():
        if isinstance(sub, TyperGroup):
            help_without_verb(sub)
    parse = group.parse_args

    def parse_args(ctx, args: list[str]) -> list[str]:
        if not args and not ctx.resilient_parsing:
            text = ctx.get_help()  # typer's rich formatter prints the help itself and returns ""
            if text:
                typer.echo(text)
            ctx.exit(0)
        return parse(ctx, args)

    group.parse_args = parse_args
