"""Workloads: one module per workload, named as on the command line (`--workload NAME`).

A workload module defines

    async def setup(ctx)             # optional: before any fault (accounts, ...)
    async def run(ctx, stop_event)   # operations until stop_event is set (faults happen meanwhile)
    async def final(ctx)             # after the final heal and settle: final reads

and records every operation in `ctx.history` (see history.py): `op = ctx.history.invoke(
process, NAME, f, value, key=..., node=node.name)`, then exactly one of `op.ok()`,
`op.fail()`, `op.info()`. A process whose operation ended in `info` takes a new id from
`ctx.new_process()` (process ids are unique across all workloads of a run).

`ctx` (chaos/harness/context.py) is one object shared by all workloads of a run: history,
nodes (hosts.Node: `name`, `ip`, `c2s`, `c2s_tls`, `http`, `cert`,
`api_async(method, path, body, timeout)`), rng (seeded from the run's seed), domain,
out_dir, failure_timeout, log(msg), new_process(), `await ctx.api(node, method, path,
body=None)` -> (status, body), `await ctx.create_account(user, password)` and
`create_accounts(users, password)` (admin API, retried on other nodes).
The harness process runs inside the client namespace, so nodes are reached directly at
their 198.18.0.K addresses. Workload modules import each other and the harness modules by
bare name (`from messages import ...`, `from xmpp_client import Client`): both
chaos/harness and chaos/harness/workloads are on sys.path. A workload needing a
third-party module (slixmpp) makes chaos/run re-execute itself with the repo's .venv.
"""
