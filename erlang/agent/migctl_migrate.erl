%% migctl_migrate: the node-side half of package migrate.
%%
%% It talks to the hybrid session backend (erlmcp_session_backend_hybrid)
%% that the application runs: its phase, its counters, and backfill batches
%% that run inside the store server (see that module for why). It also
%% creates the Mnesia schema and tables, samples node load for the backfill
%% throttle, and reads DETS files for archives.
%%
%% Same contract as migctl_agent: every exported function catches
%% everything and returns {ok, ...} or {error, Atom | Binary}; no session
%% ever crosses the wire as a decoded term.
-module(migctl_migrate).

-export([status/0, set_phase/4, reset_counters/0, backfill_step/5, load/1,
         stop_watch/0, cluster_id/0, create_schema/2, create_tables/2,
         dets_files/0, read_chunk/3, store_counts/0]).

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
        Backend = case whereis(?STORE) of
                      undefined -> fail(store_not_running);
                      _ -> maps:get(backend, ?STORE:info())
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
    case whereis(?STORE) =/= undefined andalso maps:get(backend, ?STORE:info()) of
        ?HYBRID -> ok;
        false -> fail(store_not_running);
        _ -> fail(hybrid_not_installed)
    end.

%% backfill_step(Op, Cursor, Limit, DryRun, TimeoutMs)
%%   Op: forward | reverse | prune; Cursor: <<>> to start, else the binary
%%   returned by the previous step.
%% -> {ok, Scanned, Written, Skipped, Expired, Deleted, NextCursor, Done}
backfill_step(Op, Cursor, Limit, DryRun, TimeoutMs) ->
    safe(fun() ->
        must_hybrid(),
        C = case Cursor of
                <<>> -> start;
                [] -> start;
                B when is_binary(B) -> binary_to_term(B)
            end,
        Req = case Op of
                  forward -> {copy, forward, C, Limit, DryRun};
                  reverse -> {copy, reverse, C, Limit, DryRun};
                  prune -> {prune, C, Limit, DryRun}
              end,
        Pid = whereis(?STORE),
        Ref = erlang:monitor(process, Pid),
        Pid ! {migctl_backfill, self(), Ref, Req},
        receive
            {Ref, {ok, #{scanned := Sc, written := W, skipped := Sk, expired := Ex,
                         deleted := D, next := Next, done := Done}}} ->
                erlang:demonitor(Ref, [flush]),
                NextBin = case Next of done -> <<>>; _ -> term_to_binary(Next) end,
                {ok, Sc, W, Sk, Ex, D, NextBin, Done};
            {Ref, {error, {cursor, _}}} ->
                erlang:demonitor(Ref, [flush]),
                {error, cursor_expired};
            {Ref, {error, R}} ->
                erlang:demonitor(Ref, [flush]),
                {error, if is_atom(R); is_binary(R) -> R;
                           true -> iolist_to_binary(io_lib:format("~0P", [R, 20])) end};
            {'DOWN', Ref, process, _, _} ->
                {error, store_server_died}
        after TimeoutMs ->
                erlang:demonitor(Ref, [flush]),
                {error, timeout}
        end
    end).

%% load(Owner) -> {ok, [{Key, Number}]}: what the backfill throttle looks
%% at. Scheduler utilisation over one second (runtime_tools' scheduler
%% module; the run queue length when it is missing), the longest message
%% queues that matter (the store server, mnesia's transaction manager) and
%% the number of mnesia_overload events seen since the watcher started. The
%% watcher (one per node) lives until Owner (migctl's pid) goes away or
%% stop_watch/0 is called.
load(Owner) ->
    safe(fun() ->
        ensure_watch(Owner),
        Util = try scheduler:utilization(1) of
                   L when is_list(L) ->
                       case lists:keyfind(total, 1, L) of
                           {total, U, _} -> U;
                           _ -> -1.0
                       end
               catch _:_ -> -1.0
               end,
        {ok, [{sched_util, float(Util)},
              {run_queue, erlang:statistics(run_queue)},
              {store_queue, qlen(whereis(?STORE))},
              {mnesia_tm_queue, qlen(whereis(mnesia_tm))},
              {overloads, overloads()}]}
    end).

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
            Pid -> Pid ! stop
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
        {ok, Ids} = ?STORE:list(),
        {ok, length(Ids), lists:foldl(fun(Id, A) -> (A + erlang:phash2(Id, 1 bsl 32)) band 16#ffffffffffff end, 0, Ids)}
    end).
