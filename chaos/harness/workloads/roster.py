"""roster: concurrent roster additions, a grow-only set per user, read back at the end.
An add is `ok` on the iq result, `fail` on an error result, `info` when the stream died
or the answer did not come in time."""

import asyncio

from slixmpp.exceptions import IqError, IqTimeout

from messages import PASSWORD, _connected

USERS = 3
PROCESSES = 4


def accounts(domain):
    return [f"ro{i}@{domain}" for i in range(USERS)]


async def setup(ctx):
    await ctx.create_accounts(accounts(ctx.domain), PASSWORD)


async def _adder(ctx, index, stop, counter):
    users = accounts(ctx.domain)
    user = users[index % len(users)]
    process = ctx.new_process()
    client = None
    node = None
    while not stop.is_set():
        if client is None or not client.alive:
            client, node = await _connected(ctx, user, stop=stop)
            if client is None:
                return
        counter[0] += 1
        item = f"c{counter[0]}@{ctx.domain}"
        op = ctx.history.invoke(process, "roster", "add", {"user": user, "item": item}, node=node.name)
        iq = client.x.make_iq_set(ifrom=client.x.boundjid)
        iq.enable("roster")
        iq["roster"]["items"] = {item: {"name": "", "subscription": "none", "groups": []}}
        try:
            await iq.send(timeout=10)
            op.ok({"user": user, "item": item})
        except IqError:
            op.fail({"user": user, "item": item})
        except (IqTimeout, Exception):
            op.info({"user": user, "item": item})
            client.close()
            client = None
            process = ctx.new_process()
        await asyncio.sleep(ctx.rng.uniform(0.05, 0.3))
    if client:
        client.close()


async def run(ctx, stop):
    counter = [0]
    tasks = [asyncio.ensure_future(_adder(ctx, i, stop, counter)) for i in range(PROCESSES)]
    await asyncio.gather(*tasks, return_exceptions=True)


async def final(ctx):
    for user in accounts(ctx.domain):
        process = ctx.new_process()
        op = ctx.history.invoke(process, "roster", "final-read", {"user": user})
        client, _ = await _connected(ctx, user)
        items = None
        for _ in range(5):
            try:
                iq = client.x.make_iq_get(ifrom=client.x.boundjid)
                iq.enable("roster")
                resp = await iq.send(timeout=10)
                items = [str(j) for j in resp["roster"]["items"]]
                break
            except Exception:
                await asyncio.sleep(1)
        client.close()
        if items is None:
            # No answer: the checker must not read this as an empty roster.
            op.fail({"user": user})
        else:
            op.ok({"user": user, "items": items})
