%% migctl_migrate: the node-side half of package migrate.
%%
%% It talks to the hybrid session backend (erlmcp_session_backend_hybrid)
%% that the application runs: its phase, its counters, and backfill batches
%% that run inside the store server (see that module for why), reached
%% through the server's ordinary fetch request, the one door erlmcp's own
%% store server opens to its backend (it drops every other message). It also
%% creates the Mnesia schema and tables, samples node load for the backfill
%% throttle, and reads DETS files for archives.
%%
%% Same contract as migctl_agent: every exported function catches
%% everything and returns {ok, ...} or {error, Atom | Binary}; no session
%% ever crosses the wire as a decoded term.
-module(migctl_migrate).

-export([status/0, set_phase/4, reset_counters/0, backfill_step/5, backfill_steps/7, backfill_steps/8, load/1,
         stop_watch/0, cluster_id/0, schema_state/1, create_schema/2, create_tables/2,
         dets_files/0, read_chunk/3, store_counts/0,
         native_copy/3, bench_latency/1]).

-define(HYBRID, erlmcp_session_backend_hybrid).
-define(STORE, erlmcp_session_store).
-define(WATCH, migctl_overload_watch).
-define(HYBRID_TAB, migctl_migration).
-define(SESSION_ATTRS, [session_id, session_data, last_accessed]).

safe(F) ->
    try F()
    catch
        throw:{migctl, R} -> {error, R};
        C:R:St -> {error, iolist_to_binary(io_lib:format("~p:~0P at ~0P", [C, R, 30, St, 8]))}
    end.

fail(R) -> throw({migctl, R}).

%% status() -> {ok, [{Key, Value}]}: the store's backend and, when it is
%% the hybrid, its phase, sides and counters. installed = false when the
%% application does not run the hybrid backend.
status() ->
    safe(fun() ->
        Backend = case hybrid_server() of
                      Pid when is_pid(Pid) -> ?HYBRID;
                      undefined -> other_backend()
                  end,
        case Backend of
            ?HYBRID ->
                I = ?HYBRID:info(),
                V = maps:get(phase, I),
                {P, Pct, E} = {element(1, V), element(2, V), element(3, V)},
                Fb = case V of {_, _, _, F} -> F; _ -> true end,
                {_, PK, PT} = maps:get(primary, I),
                {_, SK, ST} = maps:get(secondary, I),
                C = ?HYBRID:counters(),
                {ok, [{installed, true}, {backend, Backend}, {phase, P}, {percent, Pct},
                      {epoch, E}, {fallback, Fb}, {mode, maps:get(mode, I)},
                      {primary, {PK, PT}}, {secondary, {SK, ST}},
                      {counters, maps:to_list(C)}]};
            _ ->
                {ok, [{installed, false}, {backend, Backend}]}
        end
    end).

set_phase(Phase, Percent, Expect, Fallback) ->
    safe(fun() ->
        must_hybrid(),
        case ?HYBRID:set_phase(Phase, Percent, Expect, Fallback) of
            {ok, E} -> {ok, E};
            {error, {epoch_mismatch, _}} -> {error, epoch_mismatch};
            {error, R} when is_atom(R) -> {error, R};
            {error, R} -> {error, iolist_to_binary(io_lib:format("~0P", [R, 20]))}
        end
    end).

reset_counters() ->
    safe(fun() -> must_hybrid(), ok = ?HYBRID:reset_counters(), {ok, done} end).

must_hybrid() ->
    case hybrid_server() of
        Pid when is_pid(Pid) -> Pid;
        undefined ->
            _ = other_backend(),
            fail(hybrid_not_installed)
    end.

%% hybrid_server() -> Pid | undefined: the store server running the hybrid
%% backend, as the backend recorded it at init (erlmcp's server need not
%% be registered under any name we know).
hybrid_server() ->
    case code:is_loaded(?HYBRID) =/= false andalso
        erlang:function_exported(?HYBRID, server, 0) of
        true -> ?HYBRID:server();
        false -> undefined
    end.

%% The backend of a store server that does not run the hybrid: the
%% fixture's server says which (info request); erlmcp's answers
%% {error, unknown_request}, so only that one runs is known.
other_backend() ->
    Server = case whereis(?STORE) of
                 undefined -> whereis(erlmcp_session_backend);
                 P -> P
             end,
    case Server of
        undefined -> fail(store_not_running);
        _ ->
            case catch gen_server:call(Server, info, 5000) of
                #{backend := B} -> B;
                _ -> unknown
            end
    end.

%% backfill_step(Op, Cursor, Limit, DryRun, TimeoutMs)
%%   Op: forward | reverse | prune; Cursor: <<>> to start, else the binary
%%   returned by the previous step.
%% -> {ok, Scanned, Written, Skipped, Expired, Deleted, NextCursor, Done}
backfill_step(Op, Cursor, Limit, DryRun, TimeoutMs) ->
    backfill_steps(Op, Cursor, Limit, DryRun, TimeoutMs, Limit, 0).

%% backfill_steps(Op, Cursor, Batch, DryRun, TimeoutMs, MaxRows, BudgetMs):
%% as backfill_step/5, but runs batches one after the other (each its own
%% turn of the store server, so the application's requests go in between)
%% until the pass is done, MaxRows were scanned or BudgetMs have passed.
%% Saves a round trip to migctl per batch; the reply sums the batches.
backfill_steps(Op, Cursor, Batch, DryRun, TimeoutMs, MaxRows, BudgetMs) ->
    backfill_steps(Op, Cursor, Batch, DryRun, TimeoutMs, MaxRows, BudgetMs, []).

%% backfill_steps/8: Nodes (the migration's nodes) makes a reverse copy and
%% its prune follow the per-node ownership rule of the hybrid backend (each
%% session back to the one node that serves it); [] copies every row.
backfill_steps(Op, Cursor, Batch, DryRun, TimeoutMs, MaxRows, BudgetMs, Nodes) ->
    safe(fun() ->
        Server = must_hybrid(),
        C = case Cursor of
                <<>> -> start;
                [] -> start;
                B when is_binary(B) -> binary_to_term(B)
            end,
        Until = erlang:monotonic_time(millisecond) + BudgetMs,
        steps(Server, {Op, Nodes}, C, Batch, DryRun, TimeoutMs, MaxRows, Until, {0, 0, 0, 0, 0})
    end).

steps(Server, Op, C, Batch, DryRun, TimeoutMs, MaxRows, Until, {Sc0, W0, Sk0, Ex0, D0}) ->
    case step(Server, Op, C, Batch, DryRun, TimeoutMs) of
        {ok, #{scanned := Sc, written := W, skipped := Sk, expired := Ex, deleted := D,
               next := Next, done := Done}} ->
            Acc = {Sc0 + Sc, W0 + W, Sk0 + Sk, Ex0 + Ex, D0 + D},
            case Done orelse element(1, Acc) >= MaxRows
                orelse erlang:monotonic_time(millisecond) >= Until of
                true ->
                    NextBin = case Next of done -> <<>>; _ -> term_to_binary(Next) end,
                    {A, B, Cc, Dd, E} = Acc,
                    {ok, A, B, Cc, Dd, E, NextBin, Done};
                false ->
                    steps(Server, Op, Next, Batch, DryRun, TimeoutMs, MaxRows, Until, Acc)
            end;
        {error, _} = Err ->
            Err
    end.

%% One batch, as a fetch of the id {migctl_backfill, Req}: erlmcp's store
%% server and the fixture's both answer {ok, Session} with what the
%% backend's fetch/2 returned. A late reply after a timeout is dropped by
%% gen_server:call (it waits on an alias), so none can be taken for the
%% next batch's.
step(Server, {Op, Nodes}, C, Limit, DryRun, TimeoutMs) ->
    Req = case {Op, Nodes} of
              {forward, _} -> {copy, forward, C, Limit, DryRun};
              {reverse, []} -> {copy, reverse, C, Limit, DryRun};
              {reverse, _} -> {copy, reverse, C, Limit, DryRun, Nodes};
              {prune, []} -> {prune, C, Limit, DryRun};
              {prune, _} -> {prune, C, Limit, DryRun, Nodes}
          end,
    try gen_server:call(Server, {fetch, {migctl_backfill, Req}}, TimeoutMs) of
        {ok, {migctl_backfill_reply, {ok, #{} = R}}} -> {ok, R};
        {ok, {migctl_backfill_reply, {error, {cursor, _}}}} -> {error, cursor_expired};
        {ok, {migctl_backfill_reply, {error, R}}} -> {error, reason(R)};
        %% A backend that is not the hybrid (or an older one) looks the
        %% id up like any other and finds nothing.
        {error, not_found} -> {error, hybrid_not_installed};
        Other -> {error, reason({unexpected_reply, Other})}
    catch
        exit:{timeout, _} -> {error, timeout};
        exit:{noproc, _} -> {error, store_server_died};
        exit:{{nodedown, _}, _} -> {error, store_server_died};
        exit:{Why, _} when Why =:= normal; Why =:= shutdown; Why =:= killed -> {error, store_server_died};
        exit:{{shutdown, _}, _} -> {error, store_server_died};
        exit:{Why, _} -> {error, reason({store_server_crashed, Why})}
    end.

reason(R) when is_atom(R); is_binary(R) -> R;
reason(R) -> iolist_to_binary(io_lib:format("~0P", [R, 20])).

%% load(Owner) -> {ok, [{Key, Number}]}: what the backfill throttle looks
%% at. Scheduler utilisation over 250 ms (runtime_tools' scheduler module), the longest message
%% queues that matter (the store server, mnesia's transaction manager) and
%% the number of mnesia_overload events seen since the watcher started. The
%% watcher (one per node) lives until Owner (migctl's pid) goes away or
%% stop_watch/0 is called.
load(Owner) ->
    safe(fun() ->
        ensure_watch(Owner),
        Util = sched_util(250),
        {ok, [{sched_util, float(Util)},
              {run_queue, erlang:statistics(run_queue)},
              {store_queue, qlen(store_server())},
              {mnesia_tm_queue, qlen(whereis(mnesia_tm))},
              {overloads, overloads()}]}
    end).

%% Scheduler utilisation over Ms milliseconds (scheduler_wall_time is
%% switched on for the measurement only: it is counted per process), or
%% -1.0 when it cannot be measured. Kept short so that no call runs this
%% module's code for long (it could not be unloaded meanwhile).
sched_util(Ms) ->
    try
        _ = erlang:system_flag(scheduler_wall_time, true),
        S1 = scheduler:sample(),
        timer:sleep(Ms),
        S2 = scheduler:sample(),
        _ = erlang:system_flag(scheduler_wall_time, false),
        case lists:keyfind(total, 1, scheduler:utilization(S1, S2)) of
            {total, U, _} -> float(U);
            _ -> -1.0
        end
    catch _:_ -> -1.0
    end.

%% The store server the throttle watches: the hybrid's, else the one
%% registered under the fixture's or erlmcp's name.
store_server() ->
    case hybrid_server() of
        undefined ->
            case whereis(?STORE) of
                undefined -> whereis(erlmcp_session_backend);
                P -> P
            end;
        P -> P
    end.

qlen(undefined) -> 0;
qlen(Pid) ->
    case erlang:process_info(Pid, message_queue_len) of
        {message_queue_len, N} -> N;
        _ -> 0
    end.

ensure_watch(Owner) ->
    case whereis(?WATCH) of
        undefined ->
            Parent = self(),
            {Pid, Ref} = spawn_monitor(fun() -> watch_init(Parent, Owner) end),
            receive
                {Pid, ready} -> erlang:demonitor(Ref, [flush]), ok;
                {'DOWN', Ref, _, _, _} -> ok
            after 5000 -> ok
            end;
        _ -> ok
    end.

watch_init(Parent, Owner) ->
    case catch register(?WATCH, self()) of
        true ->
            _ = (catch mnesia:subscribe(system)),
            M = erlang:monitor(process, Owner),
            Parent ! {self(), ready},
            watch_loop(M, 0);
        _ ->
            Parent ! {self(), ready}
    end.

watch_loop(M, N) ->
    receive
        {mnesia_system_event, {mnesia_overload, _}} -> watch_loop(M, N + 1);
        {mnesia_system_event, _} -> watch_loop(M, N);
        {count, From, Ref} -> From ! {Ref, N}, watch_loop(M, N);
        stop -> ok;
        {'DOWN', M, _, _, _} -> ok;
        _ -> watch_loop(M, N)
    after 600000 -> ok
    end.

overloads() ->
    case whereis(?WATCH) of
        undefined -> 0;
        Pid ->
            Ref = make_ref(),
            Pid ! {count, self(), Ref},
            receive {Ref, N} -> N after 1000 -> 0 end
    end.

stop_watch() ->
    safe(fun() ->
        case whereis(?WATCH) of
            undefined -> ok;
            Pid ->
                Ref = erlang:monitor(process, Pid),
                Pid ! stop,
                receive {'DOWN', Ref, _, _, _} -> ok after 2000 -> ok end
        end,
        {ok, done}
    end).

%% cluster_id() -> {ok, Binary}: the Mnesia schema's cookie (the same on
%% every node of one cluster, different for another one built with the
%% same names), or {ok, none} without a disc schema.
cluster_id() ->
    safe(fun() ->
        case mnesia:system_info(is_running) of
            yes ->
                C = mnesia:table_info(schema, cookie),
                {ok, iolist_to_binary(io_lib:format("~0p", [C]))};
            _ -> {ok, none}
        end
    end).

%% create_schema(Nodes, Force): a disc schema on Nodes. Refuses when one of
%% them already has a schema on disc, unless Force (then that schema and
%% every table in it is deleted first). Mnesia is stopped on every node
%% while the schema is made and started again after.
create_schema(Nodes, Force) ->
    safe(fun() ->
        Have = [N || N <- Nodes, has_schema(N)],
        case {Have, Force} of
            {[], _} -> ok;
            {_, true} -> ok;
            {_, false} -> fail(iolist_to_binary(["schema_exists on ", lists:join(", ", [atom_to_list(N) || N <- Have])]))
        end,
        [ok = rpc_ok(N, mnesia, stop, []) || N <- Nodes],
        case Have of
            [] -> ok;
            _ -> ok = mnesia:delete_schema(Have)
        end,
        case mnesia:create_schema(Nodes) of
            ok -> ok;
            {error, R} -> fail(iolist_to_binary(io_lib:format("create_schema: ~0P", [R, 20])))
        end,
        [ok = rpc_ok(N, mnesia, start, []) || N <- Nodes],
        {ok, length(Nodes)}
    end).

%% schema_state(Nodes) -> {ok, [{Node, HasDiscSchema, MnesiaRunning}]}
schema_state(Nodes) ->
    safe(fun() ->
        {ok, [{N, has_schema(N), rpc:call(N, mnesia, system_info, [is_running], 10000) =:= yes}
              || N <- Nodes]}
    end).

has_schema(N) ->
    case rpc:call(N, mnesia, system_info, [use_dir], 10000) of
        true -> true;
        false -> false;
        {badrpc, R} -> fail(iolist_to_binary(io_lib:format("node ~s: ~0P", [N, R, 10])))
    end.

rpc_ok(N, M, F, A) ->
    case rpc:call(N, M, F, A, 30000) of
        ok -> ok;
        stopped -> ok;
        {badrpc, R} -> fail(iolist_to_binary(io_lib:format("~s ~s:~s: ~0P", [N, M, F, R, 10])));
        Other -> fail(iolist_to_binary(io_lib:format("~s ~s:~s: ~0P", [N, M, F, Other, 10])))
    end.

%% create_tables(Nodes, SessionTab) -> {ok, [{Tab, created | exists}]}:
%% the session table (erlmcp's layout) and the hybrid's phase table, as
%% disc_copies on Nodes. An existing table is accepted only when it has
%% the expected attributes.
create_tables(Nodes, Tab) ->
    safe(fun() ->
        case mnesia:system_info(is_running) of
            yes -> ok;
            _ -> fail(mnesia_not_running)
        end,
        R1 = table(Tab, [{attributes, ?SESSION_ATTRS}, {record_name, Tab}, {type, set},
                         {disc_copies, Nodes}]),
        R2 = table(?HYBRID_TAB, [{attributes, [key, value]}, {disc_copies, Nodes}]),
        ok = mnesia:wait_for_tables([Tab, ?HYBRID_TAB], 30000),
        {ok, [{Tab, R1}, {?HYBRID_TAB, R2}]}
    end).

table(T, Def) ->
    case lists:member(T, mnesia:system_info(tables)) of
        true ->
            Want = proplists:get_value(attributes, Def),
            case mnesia:table_info(T, attributes) of
                Want -> exists;
                _ -> fail(not_session_table)
            end;
        false ->
            case mnesia:create_table(T, Def) of
                {atomic, ok} -> created;
                {aborted, R} -> fail(iolist_to_binary(io_lib:format("create_table ~s: ~0P", [T, R, 20])))
            end
    end.

%% dets_files() -> {ok, [{Table, File, Bytes}]}: every DETS file open on the
%% node that holds sessions or the migration phase, synced first so the
%% copy on disk is complete.
dets_files() ->
    safe(fun() ->
        {ok, [{T, unicode:characters_to_binary(F), filelib:file_size(F)}
              || T <- dets:all(), is_atom(T),
                 F <- [dets:info(T, filename)], is_list(F),
                 ok =:= dets:sync(T)]}
    end).

read_chunk(File, Offset, Len) ->
    safe(fun() ->
        {ok, Fd} = file:open(File, [read, raw, binary]),
        try file:pread(Fd, Offset, Len) of
            {ok, B} -> {ok, B};
            eof -> {ok, <<>>};
            {error, R} -> {error, R}
        after
            file:close(Fd)
        end
    end).

%% store_counts() -> {ok, Count, Sum}: the number of sessions the running
%% store's read side holds and an order-independent checksum of their
%% ids and values without last_accessed (a restart must keep them).
store_counts() ->
    safe(fun() ->
        Server = case store_server() of
                     undefined -> fail(store_not_running);
                     P -> P
                 end,
        {ok, Ids} = gen_server:call(Server, list, 60000),
        {ok, length(Ids), lists:foldl(fun(Id, A) -> (A + erlang:phash2(Id, 1 bsl 32)) band 16#ffffffffffff end, 0, Ids)}
    end).

%% ------------------------------------------------------------- benchmarks

%% native_copy(DetsTab, MnesiaTab, Batch) -> {ok, Rows, Micros}: the
%% reference for the backfill benchmark: a plain loop on the node, no tool,
%% the same write method as the backfill (dets:select chunks, one Mnesia
%% transaction per chunk under a table write lock, written when absent or
%% newer by last_accessed, the record's last field the write time, as
%% erlmcp's store/3 puts it).
native_copy(Dets, Tab, Batch) ->
    safe(fun() ->
        T0 = erlang:monotonic_time(microsecond),
        %% Fixed, as migctl's scan is: an unfixed traversal returned ~2.5 %
        %% of the rows twice here.
        dets:safe_fixtable(Dets, true),
        N = native_loop(dets:select(Dets, [{'_', [], ['$_']}], Batch), Tab, 0),
        dets:safe_fixtable(Dets, false),
        {ok, N, erlang:monotonic_time(microsecond) - T0}
    end).

native_loop('$end_of_table', _Tab, N) -> N;
native_loop({error, R}, _Tab, _N) -> fail(iolist_to_binary(io_lib:format("~0p", [R])));
native_loop({Rows, Cont}, Tab, N) ->
    F = fun() ->
                ok = mnesia:write_lock_table(Tab),
                lists:foreach(
                  fun({Id, S}) ->
                          LA = maps:get(last_accessed, S, 0),
                          Newer = case mnesia:read(Tab, Id, write) of
                                      [{_, _, Old, _}] when is_map(Old) ->
                                          maps:get(last_accessed, Old, 0) < LA;
                                      _ -> true
                                  end,
                          case Newer of
                              true -> mnesia:write(Tab, {Tab, Id, S, erlang:system_time(millisecond)}, write);
                              false -> ok
                          end
                  end, Rows)
        end,
    {atomic, ok} = mnesia:transaction(F),
    native_loop(dets:select(Cont), Tab, N + length(Rows)).

%% bench_latency(N) -> {ok, [{Name, P50us, P99us}]}: store and fetch
%% latencies of the hybrid backend in its current phase (called directly,
%% as the store server calls it), of the primary backend alone, and of
%% both writes done by hand with the same methods (DETS insert; Mnesia
%% sync_dirty; the Mnesia record's last field is the write time, as
%% erlmcp writes it). Uses the application's configuration; writes N
%% sessions with ids <<"bench-", I>> and deletes them afterwards.
bench_latency(N) ->
    safe(fun() ->
        {_, Opts, _} = ?STORE:config(),
        %% init/1 records the calling process as the hybrid's store server;
        %% this second instance is the bench's, the application's server
        %% stays the one migctl talks to.
        Info = {?HYBRID, info},
        Saved = persistent_term:get(Info, undefined),
        {ok, HS} = ?HYBRID:init(Opts),
        Saved =:= undefined orelse persistent_term:put(Info, Saved),
        PMod = maps:get(primary_backend, Opts),
        Base = maps:without([primary_backend, secondary_backend, migration_phase], Opts),
        {ok, PS} = PMod:init(Base),
        #{primary := {_, _, PT}, secondary := {_, _, ST}} = ?HYBRID:info(),
        Ids = [<<"bench-", (integer_to_binary(I))/binary>> || I <- lists:seq(1, N)],
        Sess = fun(Id) -> (?STORE:new_session(#{<<"bench">> => true}))#{id => Id} end,
        Both = fun(Id, S) ->
                       ok = dets:insert(PT, {Id, S}),
                       mnesia:sync_dirty(fun() -> mnesia:write(ST, {ST, Id, S, erlang:system_time(millisecond)}, write) end)
               end,
        BothFetch = fun(Id) ->
                            [{_, S}] = dets:lookup(PT, Id),
                            Now = erlang:system_time(millisecond),
                            U = S#{last_accessed => Now},
                            ok = dets:insert(PT, {Id, U}),
                            mnesia:sync_dirty(fun() -> mnesia:write(ST, {ST, Id, U, Now}, write) end)
                    end,
        R = [{hybrid_store, time_each(Ids, fun(Id) -> {ok, _} = ?HYBRID:store(Id, Sess(Id), HS) end)},
             {hybrid_fetch, time_each(Ids, fun(Id) -> {ok, _, _} = ?HYBRID:fetch(Id, HS) end)},
             {primary_store, time_each(Ids, fun(Id) -> {ok, _} = PMod:store(Id, Sess(Id), PS) end)},
             {primary_fetch, time_each(Ids, fun(Id) -> {ok, _, _} = PMod:fetch(Id, PS) end)},
             {both_store, time_each(Ids, fun(Id) -> Both(Id, Sess(Id)) end)},
             {both_fetch, time_each(Ids, BothFetch)}],
        [begin ?HYBRID:delete(Id, HS), dets:delete(PT, Id) end || Id <- Ids],
        {ok, [{K, P50, P99} || {K, {P50, P99}} <- R]}
    end).

time_each(Ids, F) ->
    Ts = lists:sort([begin
                         T0 = erlang:monotonic_time(nanosecond),
                         F(Id),
                         erlang:monotonic_time(nanosecond) - T0
                     end || Id <- Ids]),
    L = length(Ts),
    {lists:nth(max(1, L div 2), Ts) / 1000, lists:nth(max(1, (L * 99) div 100), Ts) / 1000}.
