-- echovalue 0.7.0 -> 0.8.0: KV listing (issue 13, SPEC section 17). Group and key names sort
-- by code point (collation "C"), so a listing page is a range of the primary key; equality is
-- bytewise in every deterministic collation, so no key changes identity. The primary key is
-- rebuilt in the new order (the table itself is not rewritten).
--
-- Layout: this head changes tables and data; sql/build/upgrade.py appends the functions that
-- are gone, new or changed, and the grants. tests/run.sh updates every earlier version and
-- compares the catalog with a fresh install.

alter table echovalue.kv
    alter column grp type text collate "C",
    alter column key type text collate "C";

insert into echovalue.prices (operation, credits, endpoint, scope) values
    ('kv_list', 1, 'kv', 'kv:read'), ('kv_groups', 1, 'kv', 'kv:read')
on conflict (operation) do nothing;
