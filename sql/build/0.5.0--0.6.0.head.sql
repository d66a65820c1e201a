-- echovalue 0.5.0 -> 0.6.0: token scopes and KV groups (SPEC §15), wallet settings and alerts
-- (SPEC §14). Tokens made before keep what they could do, except webhook configuration and
-- the webhook secret, which become the root token's: they get the default scopes (kv:read,
-- kv:write, logs, wallet) and every group.
--
-- Layout: this head changes tables and data; sql/build/upgrade.py appends the functions that
-- are gone, new or changed, and the grants. tests/run.sh updates every earlier version and
-- compares the catalog with a fresh install.

create function echovalue._scope_names() returns text[]
language sql immutable parallel safe as $$
    select '{kv:read,kv:write,logs,wallet,webhook,settings}'::text[]
$$;

alter table echovalue.tokens add column scopes text[], add column groups text[];
update echovalue.tokens set scopes = '{kv:read,kv:write,logs,wallet}' where not is_root;
alter table echovalue.tokens add constraint tokens_scopes_check
    check ((scopes is null) = is_root and (groups is null or not is_root)
           and scopes <@ echovalue._scope_names() and pg_catalog.array_position(groups, null) is null);

alter table echovalue.prices
    add column scope text check (scope = any (echovalue._scope_names()));
update echovalue.prices p set scope = s.scope
  from (values ('wallet_get', 'wallet'), ('recharge_link', 'wallet'), ('kv_set', 'kv:write'),
               ('kv_get', 'kv:read'), ('kv_delete', 'kv:write'), ('webhook_set', 'webhook'),
               ('webhook_get', 'webhook'), ('webhook_delete', 'webhook'),
               ('webhook_show', 'webhook'), ('webhook_put', 'webhook'),
               ('webhook_patch', 'webhook'), ('webhook_remove', 'webhook'),
               ('webhook_test', 'webhook'), ('logs_entry', 'logs')) as s(operation, scope)
 where p.operation = s.operation;
insert into echovalue.prices (operation, credits, endpoint, scope) values
    ('settings_get', 1, 'settings', 'settings'), ('settings_put', 1, 'settings', 'settings');

alter type echovalue.caller add attribute scopes text[], add attribute groups text[];

-- The gateway role (the proxy): only it may record Stripe events and name a client address
-- (grants.sql). Every role in echovalue_api before this could do both, so each becomes a
-- gateway member and nothing running breaks; a role that only runs SQL applications should
-- then be `revoke echovalue_gateway from …` (README).
do $$
declare
    v_role text;
begin
    if not exists (select 1 from pg_catalog.pg_roles where rolname = 'echovalue_gateway') then
        create role echovalue_gateway nologin;
    end if;
    for v_role in select r.rolname from pg_catalog.pg_auth_members m
                    join pg_catalog.pg_roles r on r.oid = m.member
                   where m.roleid = 'echovalue_api'::regrole and r.rolname <> 'echovalue_gateway' loop
        execute pg_catalog.format('grant echovalue_gateway to %I', v_role);
    end loop;
end;
$$;

-- Refusals that charged nothing are logged at a bounded rate per wallet.
create table echovalue.refusal_log_rate (
    wallet_id bigint primary key references echovalue.wallets (id) on delete cascade,
    minute    timestamptz not null,
    entries   int not null
);

-- Settings and alerts: the threshold beside the balance, the rest in wallet_settings; alerts
-- are deliveries without a webhook name.
alter table echovalue.wallets add column low_balance_threshold bigint not null default 0;

create table echovalue.wallet_settings (
    wallet_id bigint primary key references echovalue.wallets (id) on delete cascade,
    url       text,
    headers   jsonb not null default '{}'::jsonb,
    format    text not null default ''
        check (format in ('', 'slack', 'discord', 'teams', 'telegram', 'pagerduty', 'custom')),
    template  json,
    options   jsonb not null default '{}'::jsonb,
    email     text check (pg_catalog.char_length(email) <= 254),
    updated   timestamptz not null default now(),
    constraint wallet_settings_template_check check ((format = 'custom') = (template is not null)),
    constraint wallet_settings_url_check check (url is not null or (format = '' and headers = '{}'::jsonb
                                                                    and options = '{}'::jsonb))
);
select pg_catalog.pg_extension_config_dump('echovalue.wallet_settings', '');

create table echovalue.mail_relay (
    only_row     boolean primary key default true check (only_row),
    from_address text not null,
    updated      timestamptz not null default now()
);

alter table echovalue.deliveries
    alter column webhook drop not null,
    drop constraint deliveries_kind_check,
    add constraint deliveries_kind_check check ((
        (kind = 'mail' and message_id is not null and body is null and scheduled_for is null)
        or (kind = 'scheduled' and message_id is null and body is not null and scheduled_for is not null)
        or (kind = 'test' and message_id is null and body is not null and scheduled_for is null)
        or (kind in ('alert', 'alert_email') and message_id is null and body is not null
            and scheduled_for is null))
        and (webhook is null) = (kind in ('alert', 'alert_email')));
drop index echovalue.deliveries_due_idx;
create index deliveries_due_idx on echovalue.deliveries (next_attempt_at)
    where state = 'pending' and kind not in ('test', 'alert_email');
create index deliveries_email_idx on echovalue.deliveries (next_attempt_at)
    where state = 'pending' and kind = 'alert_email';
