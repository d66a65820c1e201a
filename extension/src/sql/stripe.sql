-- Stripe recharges: the proxy records each verified webhook event once; the mailhook worker,
-- woken by NOTIFY on `echovalue_stripe` (and by its poll timer), applies pending events one
-- per transaction. Claiming, crediting, logging and marking the event happen in that one
-- transaction, so a crash anywhere either applies an event fully or not at all, and an
-- applied event is never applied again.

-- One row per Stripe event id. `state` says what became of it:
--   pending         recorded, not yet looked at by a worker
--   applied         the wallet was credited (`wallet_id`, `credits`, `applied`)
--   unpaid          a checkout session whose payment_status is not `paid` (nothing to credit)
--   unknown_wallet  client_reference_id is not the hash of any wallet
--   unknown_tier    payment_link is not the stripe_link_id of any recharge tier
--   ignored         an event type that grants nothing, or a session already credited
--   failed          applying raised an error (`detail` holds it)
-- Events are kept, never deleted by maintenance: they are the payment record. wallet_id is
-- set once known (no foreign key: the record outlives a purged wallet).
create table echovalue.stripe_events (
    id             text primary key,
    type           text not null,
    session_id     text,
    wallet_hash    text,
    payment_link   text,
    payment_status text,
    payload        jsonb not null,
    http_method    text,
    http_path      text,
    received       timestamptz not null default now(),
    state          text not null default 'pending' check (state in
                       ('pending', 'applied', 'unpaid', 'unknown_wallet', 'unknown_tier',
                        'ignored', 'failed')),
    detail         text,
    wallet_id      bigint,
    credits        bigint,
    applied        timestamptz
);
create index stripe_events_pending_idx on echovalue.stripe_events (received) where state = 'pending';
-- A checkout session pays once, whichever of its events (completed, async_payment_succeeded)
-- arrives paid: a second credit for it is impossible, not merely avoided.
create unique index stripe_events_session_applied_idx
    on echovalue.stripe_events (session_id) where state = 'applied';
select pg_catalog.pg_extension_config_dump('echovalue.stripe_events', '');

-- A payment link identifies its tier: two tiers may not claim the same link.
create unique index recharge_tiers_stripe_link_id_idx on echovalue.recharge_tiers (stripe_link_id);

-- What the operator should look at: every event that did not credit and was not ignored,
-- and pending ones (old pending rows mean no worker is running).
create view echovalue.stripe_events_unapplied as
select e.id, e.type, e.state, e.detail, e.wallet_hash, e.payment_link, e.payment_status,
       e.session_id, e.received, e.applied
  from echovalue.stripe_events e
 where e.state not in ('applied', 'ignored')
 order by e.received, e.id;

-- POST /stripe/webhook after the proxy verified Stripe-Signature: stores the event once
-- (unique by its id) and wakes the workers. 200 `{"received":true,"duplicate":…}` for a new
-- or an already recorded event; 400 when the payload is not an event with an id and a type.
create function echovalue.stripe_event_record(
    payload text,
    http_method text default 'POST',
    http_path text default '/stripe/webhook'
) returns echovalue.outcome
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_event jsonb;
    v_object jsonb;
    v_new boolean;
begin
    begin
        v_event := stripe_event_record.payload::jsonb;
    -- (any data error: bad JSON, a number out of range, bad escapes; and nesting too deep)
    exception when data_exception or program_limit_exceeded then
        v_event := null;
    end;
    if v_event is null or pg_catalog.jsonb_typeof(v_event) <> 'object' then
        return echovalue._outcome(400, 'Bad Request: body must be a Stripe event (a JSON object)', null, null);
    end if;
    if pg_catalog.jsonb_typeof(v_event -> 'id') is distinct from 'string'
       or pg_catalog.jsonb_typeof(v_event -> 'type') is distinct from 'string'
       or pg_catalog.char_length(v_event ->> 'id') not between 1 and 255
       or pg_catalog.char_length(v_event ->> 'type') not between 1 and 255 then
        return echovalue._outcome(400, 'Bad Request: a Stripe event needs an id and a type of 1 to 255 characters', null, null);
    end if;
    v_object := v_event -> 'data' -> 'object';
    if pg_catalog.jsonb_typeof(v_object) is distinct from 'object' then
        v_object := '{}';
    end if;
    insert into echovalue.stripe_events as e
        (id, type, session_id, wallet_hash, payment_link, payment_status, payload,
         http_method, http_path)
    values
        (v_event ->> 'id', v_event ->> 'type', v_object ->> 'id',
         v_object ->> 'client_reference_id',
         -- a string id, or the object when the event was sent with payment_link expanded
         coalesce(v_object -> 'payment_link' ->> 'id', v_object ->> 'payment_link'),
         v_object ->> 'payment_status', v_event,
         stripe_event_record.http_method, stripe_event_record.http_path)
    on conflict (id) do nothing
    returning true into v_new;
    if v_new then
        -- only a wake-up, sent at commit; the table is the truth
        perform pg_catalog.pg_notify('echovalue_stripe', v_event ->> 'id');
    end if;
    return echovalue._outcome(200,
        '{"received":true,"duplicate":' || case when v_new then 'false' else 'true' end || '}',
        null, null, 'application/json');
end;
$$;

-- Decides one claimed event and, when it pays for a tier, credits the wallet and logs it.
-- Runs inside stripe_event_apply's transaction; the caller marks the event with the result.
create function echovalue._stripe_event_credit(
    p_event echovalue.stripe_events,
    out state text, out detail text, out wallet_id bigint, out credits bigint
)
language plpgsql volatile as $$
declare
    v_balance bigint;
    v_other text;
    v_wallet bigint;
    v_now timestamptz := pg_catalog.now();
begin
    if p_event.type not in ('checkout.session.completed', 'checkout.session.async_payment_succeeded') then
        state := 'ignored';
        detail := 'event type ' || p_event.type || ' grants no credits';
        return;
    end if;
    if p_event.payment_status is distinct from 'paid' then
        state := 'unpaid';
        detail := 'payment_status is ' || coalesce(p_event.payment_status, 'missing');
        return;
    end if;
    select t.credits into credits
      from echovalue.recharge_tiers t where t.stripe_link_id = p_event.payment_link;
    if credits is null then
        state := 'unknown_tier';
        detail := 'no recharge tier has stripe_link_id ' || coalesce(p_event.payment_link, '(none)');
        return;
    end if;
    select e.id into v_other
      from echovalue.stripe_events e
     where e.session_id = p_event.session_id and e.state = 'applied' and e.id <> p_event.id;
    if v_other is not null then
        state := 'ignored';
        detail := 'checkout session already credited by event ' || v_other;
        credits := null;
        return;
    end if;
    -- The event names the wallet by its hash: the wallet is found first (on Citus, a read of
    -- every shard; the hash is unique by construction), then credited by its id, which names
    -- its shard. A recharge is use of the wallet: it keeps the wallet from being purged as
    -- inactive.
    select w.id into v_wallet from echovalue.wallets w where w.hash = p_event.wallet_hash limit 1;
    update echovalue.wallets w
       set balance = w.balance + _stripe_event_credit.credits, last_used = v_now
     where w.id = v_wallet and w.hash = p_event.wallet_hash
    returning w.id, w.balance into wallet_id, v_balance;
    if wallet_id is null then
        state := 'unknown_wallet';
        detail := 'no wallet has hash ' || coalesce(p_event.wallet_hash, '(none)');
        credits := null;
        return;
    end if;
    perform echovalue._alert_recharged(wallet_id, _stripe_event_credit.credits, v_balance);
    -- cost is what the request charged: nothing; the new balance shows the credits granted
    perform echovalue._log(wallet_id, 'recharge', coalesce(p_event.http_method, 'POST'),
                           coalesce(p_event.http_path, '/stripe/webhook'), 200, null, 0, v_balance);
    state := 'applied';
end;
$$;

-- The worker's call: claims the oldest pending event (FOR UPDATE SKIP LOCKED, so workers in
-- parallel never take the same one), applies it and marks it, all in the caller's one
-- transaction. One row (event_id, state, credits) per event decided; no row when none is
-- pending. An error while applying marks the event `failed` instead of blocking the queue.
create function echovalue.stripe_event_apply()
returns table (event_id text, state text, credits bigint)
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_event echovalue.stripe_events;
    v_state text;
    v_detail text;
    v_wallet bigint;
    v_credits bigint;
begin
    select e.* into v_event
      from echovalue.stripe_events e
     where e.state = 'pending'
     order by e.received, e.id
     limit 1
       for update skip locked;
    if v_event.id is null then
        return;
    end if;
    begin
        select c.state, c.detail, c.wallet_id, c.credits
          into v_state, v_detail, v_wallet, v_credits
          from echovalue._stripe_event_credit(v_event) c;
    exception
        when unique_violation then
            -- another event of the same session was applied meanwhile by another worker
            v_state := 'ignored';
            v_detail := 'checkout session already credited';
            v_wallet := null;
            v_credits := null;
        when others then
            v_state := 'failed';
            v_detail := sqlstate || ': ' || sqlerrm;
            v_wallet := null;
            v_credits := null;
    end;
    update echovalue.stripe_events e
       set state = v_state, detail = v_detail, wallet_id = v_wallet, credits = v_credits,
           applied = pg_catalog.now()
     where e.id = v_event.id;
    event_id := v_event.id;
    state := v_state;
    credits := v_credits;
    return next;
end;
$$;

-- Operator: puts an event that could not be applied (unknown_wallet, unknown_tier, failed)
-- back in the queue, e.g. after setting the missing stripe_link_id. Returns 'pending'.
create function echovalue.stripe_event_retry(event_id text) returns text
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_state text;
begin
    select e.state into v_state from echovalue.stripe_events e where e.id = stripe_event_retry.event_id
       for update;
    if v_state is null then
        raise exception 'echovalue: no Stripe event %', stripe_event_retry.event_id
            using errcode = 'no_data_found';
    end if;
    if v_state not in ('unknown_wallet', 'unknown_tier', 'failed') then
        raise exception 'echovalue: Stripe event % is %; only unknown_wallet, unknown_tier or failed events can be retried',
            stripe_event_retry.event_id, v_state
            using errcode = 'invalid_parameter_value';
    end if;
    update echovalue.stripe_events e
       set state = 'pending', detail = null, applied = null
     where e.id = stripe_event_retry.event_id;
    perform pg_catalog.pg_notify('echovalue_stripe', stripe_event_retry.event_id);
    return 'pending';
end;
$$;
