-- bench/citus.sh's floor: one write of the wallet's row, routed by Citus to its shard.
update echovalue.wallets set last_used = pg_catalog.now() where id = echovalue.token_wallet(:token);
