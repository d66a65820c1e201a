-- bench/citus.sh's floor: one read of the wallet's row, routed by Citus to its shard.
select balance from echovalue.wallets where id = echovalue.token_wallet(:token);
