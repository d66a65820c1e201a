-- echovalue 0.1.0 -> 0.2.0: API tokens with spending limits, Mail2Webhook reception, Stripe
-- recharges, and a lighter request path.
--
-- Layout: first the changes to the tables 0.1.0 had (and the one new table of schema.sql),
-- then every SQL function of the files 0.1.0 had, replaced in place (their signatures are
-- unchanged), then the files new in 0.2.0 as they are, then the privileges. tests/run.sh
-- creates 0.1.0, updates it with this script and compares the catalog with a fresh install.

-- Wallets: room for HOT updates (every request charges its wallet).
alter table echovalue.wallets set (fillfactor = 50);

-- Tokens: a public id, a recognisable prefix and optional spending limits. Tokens made by
-- 0.1.0 get an id here; their prefix cannot be recovered (only hashes are stored) and stays ''.
alter table echovalue.tokens
    add column public_id uuid not null default pg_catalog.gen_random_uuid(),
    add column prefix text not null default '',
    add column limit_per_request bigint,
    add column limit_daily bigint,
    add column limit_monthly bigint,
    add constraint tokens_public_id_key unique (public_id),
    add constraint tokens_limit_per_request_check check (limit_per_request >= 0),
    add constraint tokens_limit_daily_check check (limit_daily >= 0),
    add constraint tokens_limit_monthly_check check (limit_monthly >= 0),
    add constraint tokens_check check (not is_root or (limit_per_request is null
        and limit_daily is null and limit_monthly is null));
create index tokens_revoked_idx on echovalue.tokens (revoked) where revoked is not null;

create table echovalue.token_usage (
    wallet_id bigint not null,
    token_id  bigint not null references echovalue.tokens (id) on delete cascade,
    hour      timestamptz not null,
    credits   bigint not null check (credits >= 0),
    primary key (wallet_id, token_id, hour)
);
create index token_usage_token_id_idx on echovalue.token_usage (token_id);
create index token_usage_hour_idx on echovalue.token_usage (hour);
select pg_catalog.pg_extension_config_dump('echovalue.token_usage', '');

-- Logs: newest-first reads use the primary key; expiry is found with BRIN.
drop index echovalue.logs_wallet_newest_idx;
drop index echovalue.logs_expires_at_idx;
create index logs_expires_at_idx on echovalue.logs using brin (expires_at);

insert into echovalue.prices (operation, credits) values
    ('token_key_create', 1), ('token_key_list', 1), ('token_key_revoke', 1)
on conflict (operation) do nothing;
