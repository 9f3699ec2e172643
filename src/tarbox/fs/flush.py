"""The flush: every dirty inode, directory entry, extent, stage, audit record and
block of a tenant's store as a dozen or so array-valued statements, pipelined in
one round trip when small, ending in COMMIT."""

from __future__ import annotations

from contextlib import nullcontext

import psycopg

from tarbox.fs.records import (
    _DELETE,
    _PIPELINE_MAX_BYTES,
    _PIPELINE_MAX_ROWS,
    _SLICE_BYTES,
    Stage,
)
from tarbox.fs.txn import translate_db_error


class Flush:
    """flush of the tenant store (mixed into ``Store``; see its docstring)."""

    def _flush(self, conn: psycopg.Connection, durable: bool = False) -> None:
        self._seal()
        if not self._has_dirty() and not durable:
            conn.execute("COMMIT")
            return
        t, head = self.tid, self.head
        held = self._held()
        pub = {ino: e for ino, e in self.d_ext.items() if ino not in held}
        for ino, e in pub.items():
            node = self.d_inodes.get(ino) or self.icache.get(ino)
            if node is not None and not e.drop:
                node.content_layer = head  # the published bytes live at the head from now on
        ins = [n for n in self.d_inodes.values() if n is not None]
        # a held file's row keeps its committed size and content: others see the old version
        shown = {ino: (self.d_ext[ino].base_size, self.d_ext[ino].base) for ino in held}
        dels = [ino for ino, n in self.d_inodes.items() if n is None]
        de_del = [k for k, v in self.d_dirents.items() if v is _DELETE]
        de_set = [(k, v) for k, v in self.d_dirents.items() if v is not _DELETE]
        referenced = set()
        for e in self.d_ext.values():
            referenced.update(e.sets.values())
        release = list({h for e in pub.values() for h in e.release if h not in referenced})
        # blocks sealed and then overwritten, truncated or dropped before this commit are not stored at all
        blocks = {h: data for h, data in self.d_blocks.items() if h in referenced}
        staging: list[tuple[int, int, int, bytes]] = []  # (ino, stage id, idx, hash)
        for ino in held:
            st = self.stages.get(ino)
            if st is None:
                st = self.stages[ino] = Stage(self.alloc_ino())  # ids from the inode sequence: unique
            staging += [(ino, st.sid, i, h) for i, h in self.d_ext[ino].sets.items() if st.rows.get(i) != h]
        renew = [(st.sid, ino) for ino, st in self.stages.items() if ino in held]
        unstage = [(st.sid, ino) for ino, st in self.stages.items() if ino not in held]
        lost = list(self.d_unstage.items())
        # Pipelining saves round trips for small flushes; psycopg can stall when
        # a pipelined statement carries a large payload (psycopg issue #685),
        # so large flushes send their statements one at a time.
        small = self.d_block_bytes <= _PIPELINE_MAX_BYTES and self._dirty_rows() <= _PIPELINE_MAX_ROWS
        try:
            with conn.pipeline() if small else nullcontext():
                if durable:
                    conn.execute("SET LOCAL synchronous_commit = on")
                if dels or ins:
                    # inode rows are counted as they are really inserted and deleted
                    conn.execute(
                        """WITH d AS (
                               DELETE FROM inodes WHERE tenant_id = %(t)s AND layer_id = %(h)s AND ino = ANY(%(dels)s)
                               RETURNING 1),
                           i AS (
                               INSERT INTO inodes (tenant_id, ino, layer_id, kind, mode, nlink, size,
                                                   atime_ns, mtime_ns, ctime_ns, target, content_layer)
                               SELECT %(t)s, u.i, %(h)s, u.k, u.m, u.n, u.s, u.a, u.mt, u.c, u.tg, u.cl
                               FROM unnest(%(i)s::int8[], %(k)s::int2[], %(m)s::int4[], %(n)s::int4[], %(s)s::int8[],
                                    %(a)s::int8[], %(mt)s::int8[], %(c)s::int8[], %(tg)s::text[], %(cl)s::int8[])
                                    AS u(i, k, m, n, s, a, mt, c, tg, cl)
                               ON CONFLICT (tenant_id, ino, layer_id) DO UPDATE SET
                                   kind = EXCLUDED.kind, mode = EXCLUDED.mode, nlink = EXCLUDED.nlink,
                                   size = EXCLUDED.size, atime_ns = EXCLUDED.atime_ns, mtime_ns = EXCLUDED.mtime_ns,
                                   ctime_ns = EXCLUDED.ctime_ns, target = EXCLUDED.target,
                                   content_layer = EXCLUDED.content_layer
                               RETURNING xmax = 0 AS new)
                           UPDATE tenant_state SET used_inodes = used_inodes
                               + (SELECT count(*) FROM i WHERE new) - (SELECT count(*) FROM d)
                           WHERE tenant_id = %(t)s""",
                        {
                            "t": t,
                            "h": head,
                            "dels": dels,
                            "i": [n.ino for n in ins],
                            "k": [int(n.kind) for n in ins],
                            "m": [n.mode for n in ins],
                            "n": [n.nlink for n in ins],
                            "s": [shown[n.ino][0] if n.ino in shown else n.size for n in ins],
                            "a": [n.atime_ns for n in ins],
                            "mt": [n.mtime_ns for n in ins],
                            "c": [n.ctime_ns for n in ins],
                            "tg": [n.target for n in ins],
                            "cl": [shown[n.ino][1] if n.ino in shown else n.content_layer for n in ins],
                        },
                    )
                if de_del:
                    conn.execute(
                        # parent and name as index conditions (= ANY), so the plan never depends on
                        # statistics; the pair test then drops the cross-product's extra rows
                        """DELETE FROM dirents d
                           WHERE d.tenant_id = %(t)s AND d.parent_ino = ANY(%(p)s) AND d.name = ANY(%(n)s)
                             AND d.layer_id = %(h)s
                             AND (d.parent_ino, d.name) IN (SELECT * FROM unnest(%(p)s::int8[], %(n)s::text[]))""",
                        {"p": [k[0] for k in de_del], "n": [k[1] for k in de_del], "t": t, "h": head},
                    )
                if de_set:
                    conn.execute(
                        """INSERT INTO dirents (tenant_id, parent_ino, name, layer_id, ino)
                           SELECT %s, u.p, u.n, %s, u.i FROM unnest(%s::int8[], %s::text[], %s::int8[]) AS u(p, n, i)
                           ON CONFLICT (tenant_id, parent_ino, name, layer_id) DO UPDATE SET ino = EXCLUDED.ino""",
                        (
                            t,
                            head,
                            [k[0] for k, _ in de_set],
                            [k[1] for k, _ in de_set],
                            [v for _, v in de_set],
                        ),
                    )
                drops = [ino for ino, e in pub.items() if e.drop]
                if drops:
                    conn.execute(
                        "DELETE FROM extents WHERE tenant_id = %s AND layer_id = %s AND ino = ANY(%s)",
                        (t, head, drops),
                    )
                copies = [(ino, e.base) for ino, e in pub.items() if not e.drop and e.base not in (None, head)]
                if copies:
                    conn.execute(
                        """INSERT INTO extents (tenant_id, ino, layer_id, idx, hash)
                           SELECT e.tenant_id, e.ino, %s, e.idx, e.hash
                           FROM extents e JOIN unnest(%s::int8[], %s::int8[]) AS u(i, l)
                             ON e.ino = u.i AND e.layer_id = u.l
                           WHERE e.tenant_id = %s
                           ON CONFLICT DO NOTHING""",
                        (head, [c[0] for c in copies], [c[1] for c in copies], t),
                    )
                truncs = [(ino, e.trunc_from) for ino, e in pub.items() if e.trunc_from is not None and not e.drop]
                if truncs:
                    conn.execute(
                        """DELETE FROM extents e USING unnest(%s::int8[], %s::int8[]) AS u(i, f)
                           WHERE e.tenant_id = %s AND e.layer_id = %s AND e.ino = u.i AND e.idx >= u.f""",
                        ([c[0] for c in truncs], [c[1] for c in truncs], t, head),
                    )
                sets = [(ino, 0, i, h) for ino, e in pub.items() if not e.drop for i, h in e.sets.items()]
                for rows, layer in ((sets, head), (staging, None)):
                    if rows:  # staging rows sit at the negative layer -(stage id)
                        conn.execute(
                            """INSERT INTO extents (tenant_id, ino, layer_id, idx, hash)
                               SELECT %s, u.i, coalesce(%s::int8, -u.s), u.x, u.h
                               FROM unnest(%s::int8[], %s::int8[], %s::int8[], %b::bytea[]) AS u(i, s, x, h)
                               ON CONFLICT (tenant_id, ino, layer_id, idx) DO UPDATE SET hash = EXCLUDED.hash""",
                            (
                                t,
                                layer,
                                [r[0] for r in rows],
                                [r[1] for r in rows],
                                [r[2] for r in rows],
                                [r[3] for r in rows],
                            ),
                        )
                if renew:
                    conn.execute(
                        "SELECT tarbox_stage(%s::int8[], %s::int8[])", ([r[0] for r in renew], [r[1] for r in renew])
                    )
                for stages, strict in ((unstage, True), (lost, False)):
                    if stages:  # strict: the staged blocks must still be there (gc may reclaim old stages)
                        conn.execute(
                            "SELECT tarbox_unstage(%s::int8[], %s::int8[], %s)",
                            ([r[0] for r in stages], [r[1] for r in stages], strict),
                        )
                if self.d_audit:
                    self._write_audit(conn)
                apply = "SELECT tarbox_apply_blocks(%b::bytea[], %b::bytea[], %b::bytea[], 0)"
                if small:
                    if blocks or release:
                        conn.execute(apply, (list(blocks), list(blocks.values()), release))
                else:
                    # releases first, so the quota check after each slice sees the net usage
                    if release:
                        conn.execute(apply, ([], [], release))
                    hashes: list[bytes] = []
                    datas: list[bytes] = []
                    size = 0
                    for h, data in blocks.items():
                        hashes.append(h)
                        datas.append(data)
                        size += len(data)
                        if size >= _SLICE_BYTES:
                            conn.execute(apply, (hashes, datas, []))
                            hashes, datas, size = [], [], 0
                    if hashes:
                        conn.execute(apply, (hashes, datas, []))
                conn.execute("COMMIT")
        except psycopg.Error as exc:
            raise translate_db_error(exc) from exc
        self.stats["flushes"] += 1
        self.stats["round_trips"] += 1
        for ino, _, i, h in staging:
            self.stages[ino].rows[i] = h
        for _, ino in unstage:
            del self.stages[ino]
        self.d_unstage.clear()
        self._clear_dirty(held)
