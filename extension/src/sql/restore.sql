-- Backup and restore. pg_dump keeps the rows of an extension's table only when the table is
-- marked with pg_extension_config_dump, and pg_restore runs CREATE EXTENSION before it loads
-- them, which has already inserted the shipped rows (prices, recharge tiers) and made a new
-- installation key. So the tables an operator changes are marked, and a row loaded over one
-- of those replaces it instead of failing on its key: each table's BEFORE INSERT trigger
-- turns the insert of a key that exists into an update of that row. The restored database
-- then has the operator's prices, tiers and payment links, the relay, and the old
-- installation key, so download URLs signed before the backup stay valid. An operator's own
-- INSERT of an existing key updates it the same way.

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
