%% migctl_floor: the floor under issue 13's 120 s goal, measured with
%% Erlang alone (bench/scale/run.sh with BENCH_SCALE_FLOOR=1; not part of
%% migctl, never loaded into a service by migctl).
%%
%% The big run's native references (migctl_migrate:native_backfill,
%% migctl_check:native_compare) do the work as a careful script would,
%% beside the clients' traffic. This asks a different question: how fast
%% can Erlang/OTP on this machine move node 1's DETS file into a 5-replica
%% disc_copies table and read both back once, with nothing in the way?
%% So: no traffic (run before the load starts), no locks, no reads before
%% writes (nothing to preserve in a scratch table), the fastest bulk paths
%% Mnesia offers. Whatever it measures is a lower bound for any backfill
%% plus check on this machine, migctl's or anyone's: a real backfill must
%% not overwrite a newer client write, and a real check runs beside the
%% clients.
%%
%% run(DetsTab, Batch, Buckets) -> {ok, Rows, [{Step, Micros}]}; steps:
%%   read         one fixed pass over the DETS file through its server
%%                (dets:select chunks of Batch), rows counted, nothing kept
%%   copy_disc    the same pass written into a disc_copies table on this
%%                node only, one async_dirty activity per chunk (Mnesia's
%%                cheapest logged write: no lock, one log entry per chunk)
%%   adds         mnesia:add_table_copy of every other running node, in
%%                turn (Mnesia serialises schema changes), each waited for
%%   check        migctl_check:native_compare of the DETS file against the
%%                table (both checksummed on this node, one pass each)
%%   copy_ram     the pass written into a ram_copies table instead (no log)
%%   to_disc      mnesia:change_table_copy_type of that table to disc_copies
%%                (one dump of the whole table)
%%   copy_ram_all the pass written into a ram_copies table on every running
%%                node at once (async_dirty: the other replicas apply each
%%                chunk as it comes, on their own schedulers)
%%   to_disc_all  each of those replicas changed to disc_copies in turn
%% The floor is the fastest of the three ways to five disc_copies replicas
%% (copy_disc + adds, copy_ram + to_disc + adds, copy_ram_all +
%% to_disc_all), plus check. The scratch tables (migctl_floor_disc,
%% migctl_floor_ram, migctl_floor_all; never session tables) are deleted
%% at the end, failed or not.
-module(migctl_floor).
-export([run/3]).

run(Dets, Batch, Buckets) ->
    Disc = migctl_floor_disc,
    Ram = migctl_floor_ram,
    All = migctl_floor_all,
    Scratch = [Disc, Ram, All],
    [error({exists, T}) || T <- Scratch, lists:member(T, mnesia:system_info(tables))],
    Others = mnesia:system_info(running_db_nodes) -- [node()],
    try
        {Rows, TRead} = timed(fun() -> pass(Dets, Batch, fun(_) -> ok end) end),
        {atomic, ok} = create(Disc, disc_copies),
        {_, TCopy} = timed(fun() -> pass(Dets, Batch, writer(Disc)) end),
        {_, TAdds} = timed(fun() ->
                                   [begin
                                        {atomic, ok} = mnesia:add_table_copy(Disc, N, disc_copies),
                                        ok = erpc:call(N, mnesia, wait_for_tables, [[Disc], infinity], infinity)
                                    end || N <- Others]
                           end),
        {{ok, _Diff, _}, TCheck} =
            timed(fun() ->
                          migctl_check:native_compare({dets, Dets, "", false, self()},
                                                      {mnesia, Disc}, Buckets)
                  end),
        {atomic, ok} = mnesia:delete_table(Disc),
        {atomic, ok} = create(Ram, ram_copies),
        {_, TRam} = timed(fun() -> pass(Dets, Batch, writer(Ram)) end),
        {{atomic, ok}, TToDisc} =
            timed(fun() -> mnesia:change_table_copy_type(Ram, node(), disc_copies) end),
        {atomic, ok} = mnesia:delete_table(Ram),
        {atomic, ok} = create(All, ram_copies, [node() | Others]),
        {_, TAll} = timed(fun() -> pass(Dets, Batch, writer(All)) end),
        {_, TAllToDisc} =
            timed(fun() ->
                          %% The last chunks may still be on their way to
                          %% the other replicas: a sync_dirty write after
                          %% them returns when every replica applied it.
                          ok = mnesia:sync_dirty(fun() -> mnesia:write(All, {All, <<"floor-last">>, #{}, 0}, write) end),
                          [{atomic, ok} = mnesia:change_table_copy_type(All, N, disc_copies)
                           || N <- [node() | Others]]
                  end),
        {ok, Rows, [{read, TRead}, {copy_disc, TCopy}, {adds, TAdds}, {check, TCheck},
                    {copy_ram, TRam}, {to_disc, TToDisc},
                    {copy_ram_all, TAll}, {to_disc_all, TAllToDisc}]}
    after
        [mnesia:delete_table(T) || T <- Scratch, lists:member(T, mnesia:system_info(tables))]
    end.

create(Tab, Type) -> create(Tab, Type, [node()]).

create(Tab, Type, Nodes) ->
    mnesia:create_table(Tab, [{attributes, [session_id, session_data, last_accessed]},
                              {type, set}, {Type, Nodes}]).

writer(Tab) ->
    fun(Rows) ->
            Now = erlang:system_time(millisecond),
            mnesia:activity(async_dirty,
                            fun() -> [mnesia:write(Tab, {Tab, Id, S, Now}, write) || {Id, S} <- Rows] end)
    end.

%% pass: one fixed dets:select traversal, F applied to each chunk.
pass(Dets, Batch, F) ->
    ok = dets:safe_fixtable(Dets, true),
    try loop(dets:select(Dets, [{'_', [], ['$_']}], Batch), F, 0)
    after dets:safe_fixtable(Dets, false)
    end.

loop('$end_of_table', _F, N) -> N;
loop({error, R}, _F, _N) -> error({dets, R});
loop({Rows, Cont}, F, N) ->
    _ = F(Rows),
    loop(dets:select(Cont), F, N + length(Rows)).

timed(F) ->
    T0 = erlang:monotonic_time(microsecond),
    R = F(),
    {R, erlang:monotonic_time(microsecond) - T0}.
