-- echovalue 0.6.0 -> 0.7.0: backup and restore (issue 15, item 11). The operator's tables
-- (prices, recharge tiers, the alert relay) are kept by pg_dump, and a restored row replaces the
-- shipped one of its key (prices, tiers, the installation key) instead of failing on it.
--
-- Layout: this head changes tables and data; sql/build/upgrade.py appends the functions that
-- are gone, new or changed, and the grants. tests/run.sh updates every earlier version and
-- compares the catalog with a fresh install.

select pg_catalog.pg_extension_config_dump('echovalue.prices', '');
select pg_catalog.pg_extension_config_dump('echovalue.recharge_tiers', '');
select pg_catalog.pg_extension_config_dump('echovalue.mail_relay', '');

create function echovalue._restore_price() returns trigger
language plpgsql as $$
begin
    update echovalue.prices p
       set credits = new.credits, endpoint = new.endpoint, scope = new.scope
     where p.operation = new.operation;
    if found then
        return null;
    end if;
    return new;
end $$;
create trigger prices_restore before insert on echovalue.prices
    for each row execute function echovalue._restore_price();

create function echovalue._restore_tier() returns trigger
language plpgsql as $$
begin
    update echovalue.recharge_tiers t
       set link = new.link, stripe_link_id = new.stripe_link_id, credits = new.credits
     where t.amount = new.amount;
    if found then
        return null;
    end if;
    return new;
end $$;
create trigger recharge_tiers_restore before insert on echovalue.recharge_tiers
    for each row execute function echovalue._restore_tier();

create function echovalue._restore_installation_key() returns trigger
language plpgsql as $$
begin
    update echovalue.installation_keys k
       set key = new.key, created = new.created
     where k.name = new.name;
    if found then
        return null;
    end if;
    return new;
end $$;
create trigger installation_keys_restore before insert on echovalue.installation_keys
    for each row execute function echovalue._restore_installation_key();
