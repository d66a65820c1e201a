-- Maintenance: purges in bounded batches with FOR UPDATE SKIP LOCKED, so it never takes a
-- table lock and never waits for a request. The background worker calls it repeatedly while
-- batches come back full; anyone granted may call it too.

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
    v_kv bigint;
    v_logs bigint;
    v_rate bigint;
    v_usage bigint;
    v_revoked bigint;
    v_attachments bigint;
    v_messages bigint;
    v_unmessaged bigint;
    v_wallets bigint;
    v_wallet_ids bigint[];
    v_token_ids bigint[];
    v_hashes bytea[];
begin
    delete from echovalue.kv k
     where k.ctid = any (array(
         select x.ctid from echovalue.kv x
          where x.expires_at <= pg_catalog.now()
          limit v_batch for update skip locked));
    get diagnostics v_kv = row_count;

    delete from echovalue.logs l
     where l.ctid = any (array(
         select x.ctid from echovalue.logs x
          where x.expires_at <= pg_catalog.now()
          limit v_batch for update skip locked));
    get diagnostics v_logs = row_count;

    delete from echovalue.token_rate r
     where r.ctid = any (array(
         select x.ctid from echovalue.token_rate x
          where x.last_at <= pg_catalog.now()
                - pg_catalog.make_interval(secs => echovalue._setting('token_rate_seconds'))
          limit v_batch for update skip locked));
    get diagnostics v_rate = row_count;

    -- Usage buckets older than the longest window (30 days, plus the hour it starts in).
    delete from echovalue.token_usage u
     where u.ctid = any (array(
         select x.ctid from echovalue.token_usage x
          where x.hour < pg_catalog.date_trunc('hour', pg_catalog.now() - interval '30 days', 'UTC')
          limit v_batch for update skip locked));
    get diagnostics v_usage = row_count;

    -- Revoked tokens, once they have been listed as revoked long enough; their usage goes by
    -- ON DELETE CASCADE; an old token's row of token_legacy goes with it.
    with gone as (
        delete from echovalue.tokens t
         where t.ctid = any (array(
             select x.ctid from echovalue.tokens x
              where x.revoked < pg_catalog.now()
                    - pg_catalog.make_interval(days => echovalue._setting('revoked_token_days'))
              limit v_batch for update skip locked))
        returning t.hash
    )
    select pg_catalog.array_agg(g.hash) into v_hashes from gone g;
    v_revoked := coalesce(pg_catalog.cardinality(v_hashes), 0);
    delete from echovalue.token_legacy l where l.hash = any (v_hashes);

    delete from echovalue.attachments a
     where a.ctid = any (array(
         select x.ctid from echovalue.attachments x
          where x.created <= pg_catalog.now()
                - pg_catalog.make_interval(hours => echovalue._setting('attachment_retention_hours'))
          limit v_batch for update skip locked));
    get diagnostics v_attachments = row_count;

    -- Messages whose delivery is finished (delivered or failed for good), older than
    -- echovalue.message_retention_hours; their delivery row and attachments go by ON DELETE
    -- CASCADE. A pending delivery keeps its message however old.
    delete from echovalue.messages m
     where m.id = any (array(
         select x.id from echovalue.messages x
          where x.received_at <= pg_catalog.now()
                - pg_catalog.make_interval(hours => echovalue._setting('message_retention_hours'))
            and not exists (select 1 from echovalue.deliveries d
                             where d.wallet_id = x.wallet_id and d.message_id = x.id and d.state = 'pending')
          limit v_batch for update skip locked));
    get diagnostics v_messages = row_count;

    -- Runs, tests and alerts (no message) after the same time: finished runs and alerts, and
    -- every test (a test is answered within seconds).
    delete from echovalue.deliveries d
     where d.ctid = any (array(
         select x.ctid from echovalue.deliveries x
          where x.kind <> 'mail' and (x.kind = 'test' or x.state <> 'pending')
            and x.created <= pg_catalog.now()
                - pg_catalog.make_interval(hours => echovalue._setting('message_retention_hours'))
          limit v_batch for update skip locked));
    get diagnostics v_unmessaged = row_count;

    -- A request may lock its token (recording last_used), then its wallet. Here the wallets
    -- are locked first, so a token a request already holds is only tried with SKIP LOCKED and
    -- its wallet is left for a later run: maintenance never waits for a request, so the two
    -- cannot deadlock.
    v_wallet_ids := array(
        select x.id from echovalue.wallets x
         where x.last_used < pg_catalog.now()
               - pg_catalog.make_interval(days => echovalue._setting('inactive_days'))
         limit v_batch for update skip locked);
    select pg_catalog.array_agg(t.id), pg_catalog.array_agg(t.hash) into v_token_ids, v_hashes
      from (select t.id, t.hash from echovalue.tokens t
             where t.wallet_id = any (v_wallet_ids) for update skip locked) t;
    -- tokens and kv of these wallets go by ON DELETE CASCADE, logs (no foreign key) here
    with gone as (
        delete from echovalue.wallets w
         where w.id = any (v_wallet_ids)
           and not exists (select 1 from echovalue.tokens t
                            where t.wallet_id = w.id
                              and t.id <> all (coalesce(v_token_ids, '{}')))
        returning w.id
    ), gone_logs as (
        delete from echovalue.logs l where l.wallet_id in (select g.id from gone g)
    )
    select pg_catalog.count(*) into v_wallets from gone;
    -- (the old tokens of a wallet kept keep their rows)
    delete from echovalue.token_legacy l
     where l.hash = any (v_hashes)
       and not exists (select 1 from echovalue.wallets w where w.id = l.wallet_id);

    return pg_catalog.jsonb_build_object(
        'kv', v_kv, 'logs', v_logs, 'token_rate', v_rate, 'token_usage', v_usage,
        'revoked_tokens', v_revoked, 'attachments', v_attachments, 'messages', v_messages, 'runs_and_tests', v_unmessaged,
        'wallets', v_wallets);
end;
$$;
