-- Tables and the outcome type. Every per-wallet table carries wallet_id so the schema can be
-- sharded by wallet; only SHA-256 hashes of tokens are stored, never a token.

-- One row per credit wallet; balance can never go negative.
-- id is random (echovalue._wallet_id_new(), below 36^8) and is the wallet key every token of
-- the wallet carries (token.rs), so a call's wallet, and on Citus its shard, is known from the
-- token alone. Every unique key of a wallet's rows holds wallet_id: the schema can be sharded
-- by wallet (SPEC section 18).
create table echovalue.wallets (
    id        bigint primary key,
    balance   bigint not null default 0 check (balance >= 0),
    created   timestamptz not null default now(),
    last_used timestamptz not null default now(),
    hash      text not null,                  -- sha256 hex of the root token, shown to users
    -- a charge that takes the balance below this queues a low-balance alert (settings.sql);
    -- here, not with the other settings, so the charge reads it with the balance it updates.
    -- Its bounds are settings_put's: a CHECK here would cost every charge ~29,000 instructions
    -- (bench/callgrind.sh), checked on each update of the row
    low_balance_threshold bigint not null default 0
) with (fillfactor = 50);                     -- room for HOT updates: every request charges
create index wallets_last_used_idx on echovalue.wallets (last_used);
-- (a recharge finds its wallet by hash; unique by construction, the SHA-256 of a new token)
create index wallets_hash_idx on echovalue.wallets (hash);

-- The token scopes (SPEC section 15), in the order listings show them, and those a new
-- token gets when it names none.
create function echovalue._scope_names() returns text[]
language sql immutable parallel safe as $$
    select '{kv:read,kv:write,logs,wallet,webhook,settings}'::text[]
$$;
create function echovalue._scope_defaults() returns text[]
language sql immutable parallel safe as $$
    select '{kv:read,kv:write,logs,wallet}'::text[]
$$;

-- Tokens of a wallet: its root token, and labelled tokens with optional spending limits in
-- credits (NULL = no limit). public_id is what users see and revoke by; prefix is the token's
-- first and last characters, so a listing is recognisable without holding the secret.
create table echovalue.tokens (
    id                bigint generated always as identity,
    wallet_id         bigint not null references echovalue.wallets (id) on delete cascade,
    hash              bytea not null,         -- sha256 of the token
    is_root           boolean not null default false,
    label             text,
    created           timestamptz not null default now(),
    last_used         timestamptz,
    revoked           timestamptz,
    public_id         uuid not null default pg_catalog.gen_random_uuid(),
    prefix            text not null default '',
    limit_per_request bigint check (limit_per_request >= 0),
    limit_daily       bigint check (limit_daily >= 0),
    limit_monthly     bigint check (limit_monthly >= 0),
    -- what the token may do (SPEC section 15, echovalue._scope_names()); NULL for the root
    -- token, which may do everything
    scopes            text[],
    -- the KV groups it may touch; NULL = every group
    groups            text[],
    -- a root token is never limited (the API cannot revoke it either; an operator can)
    check (not is_root or (limit_per_request is null and limit_daily is null
                           and limit_monthly is null)),
    constraint tokens_scopes_check check ((scopes is null) = is_root and (groups is null or not is_root)
                                         and scopes <@ echovalue._scope_names()
                                         and pg_catalog.array_position(groups, null) is null),
    primary key (wallet_id, id),
    unique (wallet_id, hash),
    unique (wallet_id, public_id)
);
create index tokens_revoked_idx on echovalue.tokens (revoked) where revoked is not null;

-- Credits spent per non-root token per hour: the rolling 24-hour and 30-day windows of the
-- spending limits are sums over at most 25 and 721 of these rows, never a scan of the logs.
create table echovalue.token_usage (
    wallet_id bigint not null,
    token_id  bigint not null,
    hour      timestamptz not null,           -- the UTC hour of the charges, date_trunc('hour', t, 'UTC')
    credits   bigint not null check (credits >= 0),
    primary key (wallet_id, token_id, hour),
    foreign key (wallet_id, token_id) references echovalue.tokens (wallet_id, id) on delete cascade
);

-- Tokens made before tokens carried their wallet key (extension 0.9.0; their 32 characters
-- are all random): the wallet of each, by the token's SHA-256. The upgrade to 0.9.0 fills it;
-- nothing adds to it after, and maintenance deletes a row with its token. Small and read-only,
-- so on Citus it is a reference table: every node resolves an old token without asking another.
create table echovalue.token_legacy (
    hash      bytea primary key,
    wallet_id bigint not null
);
create index token_usage_hour_idx on echovalue.token_usage (hour);

-- Key-value entries; an expired row is never served and is purged by maintenance.
-- Names sort by code point (collation "C"), whatever the database's collation: the listing's
-- keyset pages and prefix ranges (kv_list.sql) are ranges of the primary key.
create table echovalue.kv (
    wallet_id  bigint not null references echovalue.wallets (id) on delete cascade,
    grp        text collate "C" not null,
    key        text collate "C" not null,
    value      text not null,
    expires_at timestamptz not null,
    primary key (wallet_id, grp, key)
);
create index kv_expires_at_idx on echovalue.kv (expires_at);

-- Request log, newest first per wallet; expires_at = created + retention.
-- No foreign key to wallets: its check on every request's log insert cost about 7% of a
-- request. An entry is only written for a wallet its transaction resolved (and, for a charged
-- request, holds locked), and the maintenance purge deletes a wallet's entries with it.
create table echovalue.logs (
    id          bigint generated always as identity,
    wallet_id   bigint not null,
    created     timestamptz not null default now(),
    expires_at  timestamptz not null,
    method      text,
    path        text,
    endpoint    text not null,
    status_code int not null,
    error       text,
    cost        int not null,
    balance     bigint not null,
    primary key (wallet_id, created, id)
);
-- Newest first per wallet is a backward scan of the primary key: by time (`created`, the
-- start of the entry's transaction), then by id within a transaction. Time first, because on
-- Citus a wallet's entries come from more than one node's range of ids: those of a call
-- delegated to the wallet's worker, and those of one run from the coordinator (the
-- mailhook's deliveries and recharges), so the id alone is no order. Entries are appended with
-- an expiry that grows with time, so a BRIN index finds the expired ones for maintenance at a
-- fraction of a btree's cost per insert.
create index logs_expires_at_idx on echovalue.logs using brin (expires_at);
-- A logs request filtered by type (endpoint) reads O(n) entries however rare the type is.
create index logs_endpoint_idx on echovalue.logs (wallet_id, endpoint, created, id);

-- Refusals that charged nothing logged this minute, per wallet (internals.sql, _log).
create table echovalue.refusal_log_rate (
    wallet_id bigint primary key references echovalue.wallets (id) on delete cascade,
    minute    timestamptz not null,
    entries   int not null
);

-- Price list in credits; the operator may change the credits. Each operation also names the
-- endpoint its log entries carry (SPEC section 6) and the token scope it needs (SPEC section
-- 15; NULL: none, because no token calls it or only the root token may), so no API function
-- repeats either: _pay enforces the scope.
create table echovalue.prices (
    operation text primary key,
    credits   int not null check (credits >= 0),
    endpoint  text not null,
    scope     text check (scope = any (echovalue._scope_names()))
);
insert into echovalue.prices (operation, credits, endpoint, scope) values
    ('token_new', 0, 'token', null), ('wallet_get', 1, 'token', 'wallet'),
    ('recharge_link', 0, 'token', 'wallet'),
    ('kv_set', 1, 'kv', 'kv:write'), ('kv_get', 1, 'kv', 'kv:read'),
    ('kv_delete', 1, 'kv', 'kv:write'), ('kv_list', 1, 'kv', 'kv:read'),
    ('kv_groups', 1, 'kv', 'kv:read'),
    ('webhook_set', 1, 'webhook', 'webhook'), ('webhook_get', 1, 'webhook', 'webhook'),
    ('webhook_delete', 1, 'webhook', 'webhook'), ('webhook_show', 1, 'webhook', 'webhook'),
    ('webhook_put', 1, 'webhook', 'webhook'), ('webhook_patch', 1, 'webhook', 'webhook'),
    ('webhook_remove', 1, 'webhook', 'webhook'), ('webhook_test', 1, 'webhook', 'webhook'),
    ('scheduled_run', 2, 'webhook', null),
    ('email', 1, 'email', null), ('logs_entry', 1, 'token', 'logs'),
    ('token_key_create', 1, 'token', null), ('token_key_list', 1, 'token', null),
    ('token_key_revoke', 1, 'token', null),
    ('settings_get', 1, 'settings', 'settings'), ('settings_put', 1, 'settings', 'settings');

-- Recharge tiers; link is the operator's Stripe Payment Link (none until configured).
create table echovalue.recharge_tiers (
    amount         int primary key,
    link           text,
    stripe_link_id text,
    credits        bigint not null check (credits > 0)
);
insert into echovalue.recharge_tiers (amount, credits) values (1, 1000000), (3, 3000000);

-- Last token creation per client address (NULL address stored as 0.0.0.0/0).
create table echovalue.token_rate (
    client  inet primary key,
    last_at timestamptz not null
);
create index token_rate_last_at_idx on echovalue.token_rate (last_at);

-- What every API function returns; the proxy maps it to HTTP generically.
create type echovalue.outcome as (
    status       int,
    body         text,
    content_type text,
    cost         int,
    balance      bigint,
    headers      jsonb
);

-- Who calls (internals.sql, _wallet_resolve): the paying wallet and token with its spending
-- limits (NULL = none), and the request as its log entry records it. wallet_id is NULL when
-- no live token was given; token_id is NULL when no token pays (mail to a mailbox address).
create type echovalue.caller as (
    wallet_id         bigint,
    token_id          bigint,
    is_root           boolean,
    limit_per_request bigint,
    limit_daily       bigint,
    limit_monthly     bigint,
    method            text,
    path              text,
    scopes            text[],          -- NULL for the root token: every scope
    groups            text[]           -- the KV groups it may touch; NULL = all
);

-- What paying for an operation gave (internals.sql, _pay): the endpoint its log entry names,
-- the credits taken and the balance after, or a NULL balance and the 402 outcome to answer
-- with (nothing taken).
create type echovalue.payment as (
    endpoint text,
    cost     int,
    balance  bigint,
    refusal  echovalue.outcome
);

-- User data and operator settings survive pg_dump.
select pg_catalog.pg_extension_config_dump('echovalue.wallets', '');
select pg_catalog.pg_extension_config_dump('echovalue.tokens', '');
select pg_catalog.pg_extension_config_dump('echovalue.tokens_id_seq', '');
select pg_catalog.pg_extension_config_dump('echovalue.token_usage', '');
select pg_catalog.pg_extension_config_dump('echovalue.token_legacy', '');
select pg_catalog.pg_extension_config_dump('echovalue.kv', '');
select pg_catalog.pg_extension_config_dump('echovalue.logs', '');
select pg_catalog.pg_extension_config_dump('echovalue.logs_id_seq', '');
