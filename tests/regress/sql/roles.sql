-- Who may call what (issue 15, item 4): an application's role (a member of echovalue_api)
-- can call the API, but not record a Stripe event (that trusts the caller to have checked the
-- signature: a "paid" event would mint credits) nor name the client address of a new wallet
-- (that would dodge the creation rate limit); the proxy's role, a member of
-- echovalue_gateway, can do both.
\set VERBOSITY terse
do $$
begin
    if not exists (select 1 from pg_catalog.pg_roles where rolname = 'echovalue_app') then
        create role echovalue_app login in role echovalue_api;
    end if;
end;
$$;
select r, pg_has_role(r, 'echovalue_api', 'member') as api, pg_has_role(r, 'echovalue_gateway', 'member') as gateway
  from unnest(array['echovalue_app', 'echovalue_proxy', 'echovalue_mailhook']) r;

\c - echovalue_app
begin;
select session_user;
-- its own connection's address (the unix socket has none): allowed
select status in (200, 429) as made_or_rate_limited from echovalue.token_new();
select status in (200, 429) as made_or_rate_limited from echovalue.token_new(client_addr => inet_client_addr());
rollback;
select echovalue.token_new(client_addr => inet '203.0.113.9');
select echovalue.stripe_event_record(payload => '{"id":"evt_app","type":"checkout.session.completed"}');
-- the rest of the API is there
begin;
select status from echovalue.kv_get(token => 'ev_tok_sk_live_0000', grp => 'g', key => 'k');
rollback;

\c - echovalue_proxy
begin;
select session_user;
select status from echovalue.token_new(client_addr => inet '203.0.113.10');
select status, body from echovalue.stripe_event_record(payload => '{"id":"evt_gateway","type":"x.y"}');
rollback;

\c - postgres
select count(*) as recorded from echovalue.stripe_events where id in ('evt_app', 'evt_gateway');
drop role echovalue_app;
