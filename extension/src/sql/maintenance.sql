-- Maintenance: purges in bounded batches with FOR UPDATE SKIP LOCKED, so it never takes a
-- table lock and never waits for a request. The background worker calls it repeatedly while
-- batches come back full; anyone granted may call it too.

-- One batch of a wallet table's purge: deletes up to p_batch rows of echovalue.<p_table> for
-- which p_due holds (a condition on the row as `x`; $1 is p_cutoff), wallet by wallet. The
-- wallets with such rows are read first, without a lock; then each wallet's rows are locked
-- with SKIP LOCKED (a row a request holds is left for a later run) and deleted. Every locking
-- statement names one wallet, so on Citus it runs on that wallet's shard, where a ctid is the
-- shard's own (Citus refuses FOR UPDATE across shards). p_table and p_due are this file's own
-- constants, never input. Returns how many rows went.
create function echovalue._purge(p_table text, p_due text, p_cutoff timestamptz, p_batch int)
returns bigint
language plpgsql volatile as $$
declare
    v_wallet bigint;
    v_left bigint := p_batch;
    v_n bigint;
begin
    for v_wallet in execute pg_catalog.format(
        'select distinct x.wallet_id from (select x.wallet_id from echovalue.%I x where %s limit $2) x',
        p_table, p_due) using p_cutoff, p_batch
    loop
        execute pg_catalog.format(
            'delete from echovalue.%1$I t where t.wallet_id = $3 and t.ctid = any (array('
            'select x.ctid from echovalue.%1$I x where x.wallet_id = $3 and (%2$s) '
            'limit $2 for update skip locked))', p_table, p_due)
            using p_cutoff, v_left, v_wallet;
        get diagnostics v_n = row_count;
        v_left := v_left - v_n;
        exit when v_left <= 0;
    end loop;
    return p_batch - v_left;
end;
$$;

-- One batch per table: expired keys, expired logs, stale rate-limit rows, token usage buckets
-- past the longest limit window, tokens revoked echovalue.revoked_token_days ago, attachments
-- older than echovalue.attachment_retention_hours, old messages with a finished delivery, old
-- finished runs, tests and alerts (`runs_and_tests`), and wallets unused for
-- echovalue.inactive_days with all their data. Returns the rows deleted per table.
create function echovalue.maintenance_run() returns jsonb
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_batch int := echovalue._setting('maintenance_batch');
    v_now timestamptz := pg_catalog.now();
    v_retention timestamptz := v_now
        - pg_catalog.make_interval(hours => echovalue._setting('message_retention_hours'));
    v_cutoff timestamptz;
    v_rate bigint;
    v_revoked bigint := 0;
    v_wallets bigint := 0;
    v_wallet bigint;
    v_token_ids bigint[];
    v_hashes bytea[] := '{}';
    v_purged bigint[] := '{}';
    v_gone bytea[];
    v_result jsonb;
begin
    v_result := pg_catalog.jsonb_build_object(
        'kv', echovalue._purge('kv', 'x.expires_at <= $1', v_now, v_batch),
        'logs', echovalue._purge('logs', 'x.expires_at <= $1', v_now, v_batch));

    -- (a reference table on Citus, a copy per node: deleted by its key, never by ctid)
    delete from echovalue.token_rate r
     where r.client = any (array(
         select x.client from echovalue.token_rate x
          where x.last_at <= v_now - pg_catalog.make_interval(secs => echovalue._setting('token_rate_seconds'))
          limit v_batch for update skip locked));
    get diagnostics v_rate = row_count;

    -- Usage buckets older than the longest window (30 days, plus the hour it starts in).
    v_result := v_result || pg_catalog.jsonb_build_object('token_rate', v_rate,
        'token_usage', echovalue._purge('token_usage', 'x.hour < $1',
                                        pg_catalog.date_trunc('hour', v_now - interval '30 days', 'UTC'),
                                        v_batch));

    -- Revoked tokens, once they have been listed as revoked long enough; their usage goes by
    -- ON DELETE CASCADE; an old token's row of token_legacy goes with it. (Wallet by wallet,
    -- as in _purge.)
    v_cutoff := v_now - pg_catalog.make_interval(days => echovalue._setting('revoked_token_days'));
    for v_wallet in
        select distinct x.wallet_id
          from (select x.wallet_id from echovalue.tokens x where x.revoked < v_cutoff limit v_batch) x
    loop
        with gone as (
            delete from echovalue.tokens t
             where t.wallet_id = v_wallet and t.ctid = any (array(
                 select x.ctid from echovalue.tokens x
                  where x.wallet_id = v_wallet and x.revoked < v_cutoff
                  limit v_batch - v_revoked for update skip locked))
            returning t.hash
        )
        select pg_catalog.array_agg(g.hash) into v_gone from gone g;
        v_revoked := v_revoked + coalesce(pg_catalog.cardinality(v_gone), 0);
        v_hashes := v_hashes || v_gone;
        exit when v_revoked >= v_batch;
    end loop;
    delete from echovalue.token_legacy l where l.hash = any (v_hashes);

    v_result := v_result || pg_catalog.jsonb_build_object('revoked_tokens', v_revoked,
        'attachments', echovalue._purge('attachments', 'x.created <= $1',
            v_now - pg_catalog.make_interval(hours => echovalue._setting('attachment_retention_hours')),
            v_batch),
        -- Messages whose delivery is finished (delivered or failed for good), older than
        -- echovalue.message_retention_hours; their delivery row and attachments go by ON
        -- DELETE CASCADE. A pending delivery keeps its message however old.
        'messages', echovalue._purge('messages',
            'x.received_at <= $1 and not exists (select 1 from echovalue.deliveries d'
            ' where d.wallet_id = x.wallet_id and d.message_id = x.id and d.state = ''pending'')',
            v_retention, v_batch),
        -- Runs, tests and alerts (no message) after the same time: finished runs and alerts,
        -- and every test (a test is answered within seconds).
        'runs_and_tests', echovalue._purge('deliveries',
            'x.kind <> ''mail'' and (x.kind = ''test'' or x.state <> ''pending'') and x.created <= $1',
            v_retention, v_batch));

    -- Wallets unused for echovalue.inactive_days, one by one. A request may lock its token
    -- (recording last_used), then its wallet. Here the wallet is locked first, so a token a
    -- request already holds is only tried with SKIP LOCKED and its wallet is left for a later
    -- run: maintenance never waits for a request, so the two cannot deadlock.
    v_cutoff := v_now - pg_catalog.make_interval(days => echovalue._setting('inactive_days'));
    v_hashes := '{}';
    for v_wallet in
        select x.id from echovalue.wallets x where x.last_used < v_cutoff limit v_batch
    loop
        perform from echovalue.wallets w where w.id = v_wallet and w.last_used < v_cutoff
            for update skip locked;
        continue when not found;
        select pg_catalog.array_agg(t.id), pg_catalog.array_agg(t.hash) into v_token_ids, v_gone
          from (select t.id, t.hash from echovalue.tokens t
                 where t.wallet_id = v_wallet for update skip locked) t;
        -- tokens and kv of the wallet go by ON DELETE CASCADE, logs (no foreign key) here
        delete from echovalue.wallets w
         where w.id = v_wallet
           and not exists (select 1 from echovalue.tokens t
                            where t.wallet_id = v_wallet
                              and t.id <> all (coalesce(v_token_ids, '{}')));
        continue when not found;
        delete from echovalue.logs l where l.wallet_id = v_wallet;
        v_wallets := v_wallets + 1;
        v_hashes := v_hashes || v_gone;
        v_purged := v_purged || v_wallet;
    end loop;
    delete from echovalue.token_legacy l where l.hash = any (v_hashes);
    -- (reference tables on Citus: one statement each, after the loop)
    delete from echovalue.mailbox_legacy l where l.wallet_id = any (v_purged);

    return v_result || pg_catalog.jsonb_build_object('wallets', v_wallets);
end;
$$;
