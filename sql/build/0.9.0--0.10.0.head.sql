-- echovalue 0.9.0 -> 0.10.0: scale-out on Citus, second part (issue 14, SPEC section 18).
-- Every API function that takes a token gets a last argument `wallet bigint default null`, a
-- routing hint (echovalue.token_wallet(token), public now, was _token_wallet) by which Citus
-- delegates the call to the node of its wallet; echovalue.distribute() distributes those
-- functions and gives each node its own range of ids. Maintenance, the delivery and schedule
-- claims and the Stripe credit read what is due first, without a lock, then lock it wallet by
-- wallet with statements that name the wallet (on Citus, its shard). The log's primary key puts
-- time before the id.
--
-- Layout: this head changes tables and data; sql/build/upgrade.py appends the functions that
-- are gone, new or changed, and the grants. tests/run.sh updates every earlier version and
-- compares the catalog with a fresh install.

-- logs: newest first by time, then id (on Citus the ids of one wallet's entries come from more
-- than one node's range); the primary key and the endpoint index are rebuilt in that order.
alter table echovalue.logs drop constraint logs_pkey;
alter table echovalue.logs add primary key (wallet_id, created, id);
drop index echovalue.logs_endpoint_idx;
create index logs_endpoint_idx on echovalue.logs (wallet_id, endpoint, created, id);
