-- echovalue 0.2.0 -> 0.3.0: a faster request path (issue 6).
--
-- Layout: first the new type and the drops, then the Rust functions new in 0.3.0, then every
-- SQL function replaced in place (the new ones created), then the privileges. tests/run.sh
-- creates 0.2.0 (and 0.1.0), updates it and compares the catalog with a fresh install.

-- What _pay returns.
create type echovalue.payment as (
    cost    int,
    balance bigint,
    refusal echovalue.outcome
);

-- _setting is a Rust function now (created below); only plpgsql bodies call it.
drop function echovalue._setting(text);

-- Logs: no foreign key to wallets (see schema.sql); maintenance deletes a purged wallet's logs.
alter table echovalue.logs drop constraint logs_wallet_id_fkey;

-- _name_error and _caller_token are Rust functions now (created below), as _setting.
drop function echovalue._name_error(text, text);
drop function echovalue._caller_token(bigint);
