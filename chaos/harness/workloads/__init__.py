"""Workloads: one module per workload, named as on the command line (`--workload NAME`).

A workload module defines

    async def run(ctx, stop_event)   # operations until stop_event is set (faults happen meanwhile)
    async def final(ctx)             # after the final heal and settle: final reads

and records every operation in `ctx.history` (see history.py): `op = ctx.history.invoke(
process, NAME, f, value, key=..., node=node.name)`, then exactly one of `op.ok()`,
`op.fail()`, `op.info()`. A process whose operation ended in `info` takes a new id from
`ctx.new_process()` (process ids are unique across all workloads of a run).

`ctx` (chaos/harness/context.py) has: history, nodes (hosts.Node: `name`, `ip`, `c2s`,
`c2s_tls`, `http`, `cert`, `api_async(method, path, body, timeout)`), rng (seeded per
workload), domain, out_dir, log(msg), new_process(), and
`await ctx.create_account(user, password)` (admin API, retried on other nodes).
The harness process runs inside the client namespace, so nodes are reached directly at
their 198.18.0.K addresses.
"""
