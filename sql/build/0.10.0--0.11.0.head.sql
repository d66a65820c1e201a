-- echovalue 0.10.0 -> 0.11.0: scale-out on Citus, third part (issue 14, SPEC section 18).
-- A new mailbox id starts with its wallet's key, as tokens do, so that an inbound address
-- names its wallet's shard: the mailhook passes `wallet => echovalue.recipient_wallet($1)` to
-- mail_rcpt_check and mail_receive. The mailboxes made before keep their addresses:
-- echovalue.mailbox_legacy maps each to its wallet. A test's await value names its wallet
-- too (webhook_test_result takes the `wallet` hint, echovalue.test_wallet). On a distributed
-- install, run echovalue.distribute() again after this update: it makes mailbox_legacy a
-- reference table and delegates the three changed functions.
--
-- Layout: this head changes tables and data; sql/build/upgrade.py appends the functions that
-- are gone, new or changed, and the grants. tests/run.sh updates every earlier version and
-- compares the catalog with a fresh install.

create table echovalue.mailbox_legacy (
    mailbox   text primary key,
    wallet_id bigint not null
);
create index mailbox_legacy_wallet_idx on echovalue.mailbox_legacy (wallet_id);
insert into echovalue.mailbox_legacy (mailbox, wallet_id)
select m.mailbox, m.wallet_id from echovalue.mailboxes m
union all
select h.mailbox, h.wallet_id from echovalue.webhooks h where h.mailbox is not null;
select pg_catalog.pg_extension_config_dump('echovalue.mailbox_legacy', '');
