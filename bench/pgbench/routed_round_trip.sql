-- bench/citus.sh's floor: a statement that reads no table (the round trip and the hooks).
select 1;
