-- Scheduled webhooks (SPEC §13): the mailhook's scheduler plans runs here, and sleeps until
-- schedule_next_due() in between (woken early by NOTIFY echovalue_schedule when a schedule
-- changes). A run is a delivery of kind `scheduled`, so it is signed, retried and logged like
-- every delivery. Cron and time zones are Rust (schedule.rs): schedule_next, schedule_latest.

-- The body of one run of a webhook.
create function echovalue._schedule_run_body(p_hook echovalue.webhooks, p_for timestamptz)
returns text
language plpgsql stable as $$
begin
    return (
    select pg_catalog.format(
        '{"type":"scheduled_webhook_run","webhookId":%s,"scheduledFor":%s,"executedAt":%s,"walletHash":%s}',
        echovalue._json_str(p_hook.name), echovalue._json_str(echovalue._ts(p_for)),
        echovalue._json_str(echovalue._ts(pg_catalog.now())), echovalue._json_str(w.hash))
      from echovalue.wallets w
     where w.id = p_hook.wallet_id);
end;
$$;

-- Plans up to `batch` due runs, each in this one transaction (a worker killed before commit
-- leaves them due; after commit the run is queued: exactly one per occurrence). For each due
-- webhook (FOR UPDATE SKIP LOCKED, so workers share the work): the missed occurrences
-- collapse into one run for the latest of them; it is charged `scheduled_run` and queued
-- (NOTIFY echovalue_mail), or, when the wallet cannot pay, skipped, recorded as the
-- webhook's failure and logged as a 402 (once per streak of skips); then the next run is
-- planned after now. A webhook whose wallet another transaction holds is left for the next
-- call, so this never waits for a request (which takes the wallet, then the webhook), and an
-- error planning one webhook is recorded on it alone. Returns how many webhooks it planned.
create function echovalue.schedule_claim(batch int default 100) returns int
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    c_unpaid constant text := 'Insufficient credits: the run was skipped';
    v_hook echovalue.webhooks;
    v_for timestamptz;
    v_caller echovalue.caller;
    v_paid echovalue.payment;
    v_id bigint;
    v_status text;
    v_error text;
    v_ran timestamptz;
    v_n int := 0;
    v_now timestamptz := pg_catalog.now();
    v_wallet bigint;
    v_name text;
    v_balance bigint;
    v_price bigint;
begin
    if schedule_claim.batch is null or schedule_claim.batch not between 1 and 10000 then
        raise exception 'echovalue: schedule_claim needs batch 1..10000'
            using errcode = 'invalid_parameter_value';
    end if;
    -- The due webhooks are read first, without a lock; then each is locked with its wallet by
    -- a statement that names the wallet (on Citus it runs on that wallet's shard: Citus
    -- refuses FOR UPDATE across shards). A webhook whose row or wallet another transaction
    -- holds, or that another worker planned meanwhile, is skipped and does not count.
    for v_wallet, v_name in
        select h.wallet_id, h.name from echovalue.webhooks h
         where h.next_run_at is not null and h.next_run_at <= v_now
         order by h.next_run_at
         limit schedule_claim.batch
    loop
        select h.* into v_hook
          from echovalue.webhooks h
          join echovalue.wallets w on w.id = h.wallet_id
         where h.wallet_id = v_wallet and w.id = v_wallet and h.name = v_name
           and h.next_run_at <= v_now
           for update of h skip locked
           for no key update of w skip locked;
        continue when not found;
        v_n := v_n + 1;
        v_status := v_hook.last_status;
        v_error := v_hook.last_error;
        v_ran := v_hook.last_run_at;
        begin
            v_for := greatest(v_hook.next_run_at,
                              echovalue.schedule_latest(v_hook.cron, v_hook.timezone, v_now));
            v_caller := row(v_hook.wallet_id, null, null, null, null, null, 'CRON',
                            '/webhook/' || v_hook.name, null, null)::echovalue.caller;
            -- (read by statements of their own: on Citus a query of the wallet's rows runs
            -- whole on its shard, where _price could not read the prices)
            select w.balance into v_balance from echovalue.wallets w where w.id = v_hook.wallet_id;
            v_price := (echovalue._price('scheduled_run')).credits;
            if exists (select 1 from echovalue.deliveries d
                        where d.wallet_id = v_hook.wallet_id and d.webhook = v_hook.name
                          and d.kind = 'scheduled' and d.scheduled_for = v_for) then
                -- already run: cannot happen while next_run_at only moves forward; the unique
                -- index (webhook, occurrence) is the guard
                null;
            elsif v_hook.last_error = c_unpaid and v_balance < v_price then
                -- still unpaid: recorded and logged at the first skip of the streak; a wallet
                -- kept only by its schedules is not "used" and goes after echovalue.inactive_days
                null;
            else
                v_paid := echovalue._pay(v_caller, 'scheduled_run');
                v_ran := v_now;
                if v_paid.balance is null then
                    v_status := 'failure';
                    v_error := c_unpaid;
                else
                    insert into echovalue.deliveries as d (wallet_id, webhook, kind, body, scheduled_for)
                    values (v_hook.wallet_id, v_hook.name, 'scheduled',
                            echovalue._schedule_run_body(v_hook, v_for), v_for)
                    returning d.id into v_id;
                    perform echovalue._finish(v_caller, v_paid, 200, null);
                    v_status := null;
                    v_error := null;
                    perform pg_catalog.pg_notify('echovalue_mail', v_id::text);
                end if;
            end if;
            update echovalue.webhooks h
               set next_run_at = echovalue.schedule_next(h.cron, h.timezone, greatest(v_now, v_for)),
                   last_run_at = v_ran, last_status = v_status, last_error = v_error
             where h.wallet_id = v_hook.wallet_id and h.name = v_hook.name;
        exception when others then
            -- one webhook's failure must not hold up every other schedule
            raise warning 'echovalue: planning a run of webhook % of wallet % failed: %',
                v_hook.name, v_hook.wallet_id, sqlerrm;
            update echovalue.webhooks h
               set next_run_at = v_now + interval '1 minute', last_status = 'failure',
                   last_error = 'the run could not be planned; it is tried again in a minute'
             where h.wallet_id = v_hook.wallet_id and h.name = v_hook.name;
        end;
    end loop;
    return v_n;
end;
$$;

-- When the earliest planned run is due (NULL when none is planned): the scheduler sleeps
-- until then. One index look-up however many schedules there are.
create function echovalue.schedule_next_due() returns timestamptz
language plpgsql stable security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
begin
    return (
    select h.next_run_at from echovalue.webhooks h
     where h.next_run_at is not null
     order by h.next_run_at
     limit 1);
end;
$$;
