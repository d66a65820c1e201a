-- Scale-out on Citus (SPEC section 18). echovalue.distribute(), run once by a superuser on a
-- Citus coordinator where the extension is installed (the workers added first or later), turns
-- the single-node install, fresh or holding data, into a distributed one:
--   - every wallet's table is distributed by the wallet (wallets by id, the others by
--     wallet_id), colocated, so the rows of a wallet live on one node;
--   - the small shared tables are reference tables, a copy on every node: prices, recharge
--     tiers, the installation keys, the relay, the old tokens' wallets (token_legacy), the
--     token_new rate rows and the Stripe events (their unique id and the unique applied
--     session stay exact: a reference table enforces its unique keys, so a Stripe event
--     credits once);
--   - the unique indexes on an id alone (messages, attachments, deliveries) and on a mailbox
--     address become plain indexes, because Citus enforces only unique keys that hold the
--     distribution column. Those values stay unique by construction: the ids come from each
--     node's own range of the sequence (Citus gives every node a disjoint one), a mailbox
--     address is 96 random bits;
--   - the restore triggers of prices, tiers and installation keys are dropped: Citus copies a
--     reference table through them, and a distributed database is backed up with Citus's own
--     tools, not pg_dump of one node.
-- It is idempotent: a table already distributed is left as it is.

-- Whether echovalue.<p_table> is a Citus table already (plpgsql: the body names a Citus
-- catalog, which a database without Citus does not have, and is only planned when it runs).
create function echovalue._distributed(p_table text) returns boolean
language plpgsql stable as $$
begin
    return exists (select from pg_catalog.pg_dist_partition p
                    where p.logicalrelid = ('echovalue.' || p_table)::regclass);
end;
$$;

create function echovalue.distribute() returns text
language plpgsql volatile as $$
declare
    v_table text;
    v_done text[] := '{}';
begin
    if not exists (select from pg_catalog.pg_extension e where e.extname = 'citus') then
        raise exception 'echovalue: distribute() needs the citus extension in this database'
            using errcode = 'feature_not_supported',
                  hint = 'CREATE EXTENSION citus on the coordinator, add the workers, then run it again.';
    end if;
    if not (select r.rolsuper from pg_catalog.pg_roles r where r.rolname = current_user) then
        raise exception 'echovalue: only a superuser may distribute echovalue'
            using errcode = 'insufficient_privilege';
    end if;

    drop trigger if exists prices_restore on echovalue.prices;
    drop trigger if exists recharge_tiers_restore on echovalue.recharge_tiers;
    drop trigger if exists installation_keys_restore on echovalue.installation_keys;
    foreach v_table in array array['messages_id_idx', 'attachments_id_idx', 'deliveries_id_idx']
    loop
        if (select i.indisunique from pg_catalog.pg_index i
             where i.indexrelid = pg_catalog.to_regclass('echovalue.' || v_table)) then
            execute pg_catalog.format('drop index echovalue.%I', v_table);
            execute pg_catalog.format('create index %I on echovalue.%I (id)', v_table,
                                      pg_catalog.split_part(v_table, '_', 1));
        end if;
    end loop;
    foreach v_table in array array['mailboxes', 'webhooks'] loop
        if exists (select from pg_catalog.pg_constraint c
                    where c.conname = v_table || '_mailbox_key'
                      and c.conrelid = ('echovalue.' || v_table)::regclass) then
            execute pg_catalog.format('alter table echovalue.%I drop constraint %I', v_table,
                                      v_table || '_mailbox_key');
            execute pg_catalog.format('create index %I on echovalue.%I (mailbox)',
                                      v_table || '_mailbox_idx', v_table);
        end if;
    end loop;

    -- (one Citus call per statement: several in one statement deadlock on the metadata sync)
    foreach v_table in array array['prices', 'recharge_tiers', 'installation_keys', 'mail_relay',
                                   'token_legacy', 'token_rate', 'stripe_events'] loop
        if not echovalue._distributed(v_table) then
            perform create_reference_table(('echovalue.' || v_table)::regclass);
            v_done := v_done || v_table;
        end if;
    end loop;
    if not echovalue._distributed('wallets') then
        perform create_distributed_table('echovalue.wallets'::regclass, 'id');
        v_done := v_done || 'wallets'::text;
    end if;
    foreach v_table in array array['tokens', 'token_usage', 'kv', 'logs', 'refusal_log_rate',
                                   'wallet_settings', 'mailboxes', 'webhooks', 'messages',
                                   'attachments', 'deliveries'] loop
        if not echovalue._distributed(v_table) then
            perform create_distributed_table(('echovalue.' || v_table)::regclass, 'wallet_id',
                                             colocate_with => 'echovalue.wallets');
            v_done := v_done || v_table;
        end if;
    end loop;
    return pg_catalog.format('distributed: %s', coalesce(nullif(pg_catalog.array_to_string(v_done, ', '), ''),
                                                          'nothing left to do'));
end;
$$;

