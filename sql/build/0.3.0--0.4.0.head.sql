-- echovalue 0.3.0 -> 0.4.0: the request context is a value (issue 16). _wallet_resolve returns
-- an echovalue.caller that _pay, _fail and _finish take; the request-state settings and
-- _caller_token are gone; each price names the endpoint of its log entries.
--
-- Layout: this head changes tables and types; sql/build/upgrade.py appends the functions that
-- are gone, new or changed, and the grants. tests/run.sh updates every earlier version and
-- compares the catalog with a fresh install.

alter table echovalue.prices add column endpoint text;
update echovalue.prices set endpoint = case
    when operation like 'kv\_%' then 'kv'
    when operation like 'webhook\_%' then 'webhook'
    when operation = 'email' then 'email'
    else 'token'
end;
alter table echovalue.prices alter column endpoint set not null;

-- Types as in schema.sql; payment gains its endpoint, so _pay, which returns it, goes first.
create type echovalue.caller as (
    wallet_id bigint, token_id bigint, is_root boolean,
    limit_per_request bigint, limit_daily bigint, limit_monthly bigint,
    method text, path text
);
drop function echovalue._pay(bigint, text, text, text, text, int);
drop type echovalue.payment;
create type echovalue.payment as (endpoint text, cost int, balance bigint, refusal echovalue.outcome);
