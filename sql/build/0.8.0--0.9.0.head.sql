-- echovalue 0.8.0 -> 0.9.0: every unique key of a wallet's rows holds wallet_id, and tokens
-- carry their wallet's key (issue 14, SPEC section 18: the schema can be sharded by wallet).
-- New wallets get random ids (echovalue._wallet_id_new()); the ids of the wallets made before
-- stay, and the first 8 of the 32 characters of a token made from now on are its wallet's id
-- in base36. A token made before is random all through: echovalue.token_legacy maps it to its
-- wallet, filled here once with every token there is.
--
-- Layout: this head changes tables and data; sql/build/upgrade.py appends the functions that
-- are gone, new or changed, and the grants. tests/run.sh updates every earlier version and
-- compares the catalog with a fresh install.

-- wallets: the id is no longer drawn from a sequence; the hash is found by a plain index
-- (the sequence leaves the extension's dump list first: dropping it would leave its OID there)
alter extension echovalue drop sequence echovalue.wallets_id_seq;
alter table echovalue.wallets alter column id drop identity;
alter table echovalue.wallets drop constraint wallets_hash_key;
create index wallets_hash_idx on echovalue.wallets (hash);

create table echovalue.token_legacy (
    hash      bytea primary key,
    wallet_id bigint not null
);
insert into echovalue.token_legacy (hash, wallet_id)
select t.hash, t.wallet_id from echovalue.tokens t;
select pg_catalog.pg_extension_config_dump('echovalue.token_legacy', '');

-- tokens: keyed within their wallet, and their usage by (wallet, token)
alter table echovalue.token_usage drop constraint token_usage_token_id_fkey;
drop index echovalue.token_usage_token_id_idx;
alter table echovalue.tokens drop constraint tokens_pkey;
alter table echovalue.tokens drop constraint tokens_hash_key;
alter table echovalue.tokens drop constraint tokens_public_id_key;
drop index echovalue.tokens_wallet_id_idx;
alter table echovalue.tokens
    add constraint tokens_pkey primary key (wallet_id, id),
    add constraint tokens_wallet_id_hash_key unique (wallet_id, hash),
    add constraint tokens_wallet_id_public_id_key unique (wallet_id, public_id);
alter table echovalue.token_usage
    add constraint token_usage_wallet_id_token_id_fkey foreign key (wallet_id, token_id)
        references echovalue.tokens (wallet_id, id) on delete cascade;
