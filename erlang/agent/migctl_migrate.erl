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

%% safe/1 and fail/1 are the agents' one error convention (migctl_lib).
-import(migctl_lib, [safe/1, fail/1]).
-export([status/0, set_phase/4, reset_counters/0, backfill_step/5, backfill_steps/7, backfill_steps/8,
         backfill_steps/9, load/1, probe/3,
         stop_watch/0, cluster_id/0, schema_state/1, create_schema/2, create_tables/2,
         table_copies/1, drop_copy/2, add_copy/4,
         dets_files/0, read_chunk/3, store_counts/0,
         native_copy/3, native_backfill/4, bench_latency/1,
         persist_watch/3, persist_snapshot/3, persist_touched/2]).

-define(HYBRID, erlmcp_session_backend_hybrid).
-define(STORE, erlmcp_session_store).
-define(WATCH, migctl_overload_watch).
-define(HYBRID_TAB, migctl_migration).
-define(SESSION_ATTRS, [session_id, session_data, last_accessed]).
%% A backfill batch's turn of the store server while the application's
%% requests queue behind it (backfill_steps/9), and the fewest rows a
%% batch reads (below that a batch costs more in fixed overhead, one
%% Mnesia commit, than in rows).
-define(TURN_MS, 25).
-define(MIN_ROWS, 50).
%% The longest turn a busy application's queue earns the backfill.
-define(MAX_TURN_MS, 250).


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
                      {counters, maps:to_list(C)},
                      {dual_writes_pending, dual_writes_pending()}]};
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

%% Dual-writes the node acknowledged and has not applied to the Mnesia
%% side yet (a hybrid older than the deferred writes has none).
dual_writes_pending() ->
    case erlang:function_exported(?HYBRID, dual_writes_pending, 0) of
        true -> ?HYBRID:dual_writes_pending();
        false -> 0
    end.

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
            starting(Server) andalso fail(store_starting),
            case catch gen_server:call(Server, info, 5000) of
                #{backend := B} -> B;
                _ -> unknown
            end
    end.

%% starting(Pid): the store server is registered but still in its init:
%% erlmcp's opens its DETS file there, which after a crash means DETS's
%% repair of the whole file (about 80 s for the big run's 1.68 GB) before it
%% answers anything; a call would only wait. gen_server:init_it/6 is on
%% its stack until init returns (the loop after it is a tail call); the
%% backtrace has every frame.
starting(Pid) ->
    case erlang:process_info(Pid, backtrace) of
        {backtrace, B} when is_binary(B) -> binary:match(B, <<"gen_server:init_it/">>) =/= nomatch;
        _ -> false
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
    backfill_steps(Op, Cursor, Batch, DryRun, TimeoutMs, MaxRows, BudgetMs, Nodes, ?TURN_MS).

%% backfill_steps/9: TurnMs is how long one batch may hold the store server
%% while the application's requests are waiting behind it.
%%
%% How batches are sized. A batch is one turn of the store server: every
%% application call that arrives meanwhile waits for it (erlmcp's clients
%% give up after 5 s). The hybrid reports what each batch cost it
%% (turn_us) and how many requests queued up behind it (waiting). While
%% requests queue up, the next batch is sized to take TurnMs at the rate
%% just measured (at least ?MIN_ROWS rows; longer, up to ?MAX_TURN_MS,
%% when the server is saturated: see next_limit/6); when none did, it doubles, up
%% to Batch rows (as large as the operator allows: a quiet node copies in
%% big batches, as the native loop does, and a node whose traffic is light
%% goes back to the budget at the first request that waited). The size carries over from call to call in
%% the cursor, which stays opaque to migctl.
backfill_steps(Op, Cursor, Batch, DryRun, TimeoutMs, MaxRows, BudgetMs, Nodes, TurnMs) ->
    safe(fun() ->
        Server = must_hybrid(),
        {C, Limit} = case Cursor of
                         <<>> -> {start, min(Batch, ?MIN_ROWS)};
                         [] -> {start, min(Batch, ?MIN_ROWS)};
                         B when is_binary(B) ->
                             case binary_to_term(B) of
                                 {sized, C0, L0} -> {C0, min(Batch, L0)};
                                 C0 -> {C0, min(Batch, ?MIN_ROWS)}
                             end
                     end,
        Until = erlang:monotonic_time(millisecond) + BudgetMs,
        steps(Server, {Op, Nodes}, C, {Limit, Batch, TurnMs}, DryRun, TimeoutMs, MaxRows, Until,
              {0, 0, 0, 0, 0})
    end).

steps(Server, Op, C, {Limit, Batch, TurnMs}, DryRun, TimeoutMs, MaxRows, Until, {Sc0, W0, Sk0, Ex0, D0}) ->
    T0 = erlang:monotonic_time(microsecond),
    case step(Server, Op, C, Limit, DryRun, TimeoutMs) of
        {ok, #{scanned := Sc, written := W, skipped := Sk, expired := Ex, deleted := D,
               next := Next, done := Done} = R} ->
            Acc = {Sc0 + Sc, W0 + W, Sk0 + Sk, Ex0 + Ex, D0 + D},
            CallUs = erlang:monotonic_time(microsecond) - T0,
            Limit1 = next_limit(Limit, Batch, TurnMs, Sc, CallUs, R),
            case Done orelse element(1, Acc) >= MaxRows
                orelse erlang:monotonic_time(millisecond) >= Until of
                true ->
                    NextBin = case Next of done -> <<>>; _ -> term_to_binary({sized, Next, Limit1}) end,
                    {A, B, Cc, Dd, E} = Acc,
                    {ok, A, B, Cc, Dd, E, NextBin, Done};
                false ->
                    steps(Server, Op, Next, {Limit1, Batch, TurnMs}, DryRun, TimeoutMs, MaxRows, Until, Acc)
            end;
        %% A batch that did not get its turn in time after earlier ones of
        %% this call did: report what they copied, with the cursor of the
        %% batch that timed out, so that migctl keeps the progress and
        %% tries that batch again (batches are idempotent: the writes are
        %% conditional, and the late one, if the server still runs it, only
        %% writes what is newer).
        %% Likewise a batch that gave up on a lock conflict (the hybrid's
        %% copy_rows/4): the server is free, the table is not, for now.
        {error, Busy} when (Busy =:= timeout orelse Busy =:= lock_conflict),
                           {Sc0, W0, Sk0, Ex0, D0} =/= {0, 0, 0, 0, 0} ->
            {ok, Sc0, W0, Sk0, Ex0, D0, term_to_binary({sized, C, max(min(Batch, ?MIN_ROWS), Limit div 2)}), false};
        {error, _} = Err ->
            Err
    end.

%% next_limit(Limit, Batch, TurnMs, Scanned, CallUs, Reply): see
%% backfill_steps/9. The budget of a turn is TurnMs, or, when the
%% application keeps the server busier than that (the batch waited longer
%% than TurnMs in the server's queue, behind the application's requests:
%% CallUs - turn_us), as long as that wait, up to ?MAX_TURN_MS: a saturated
%% server then gives the backfill one turn for every turn of the
%% application's queue, instead of starving it (measured at 900k sessions
%% on 5 nodes, a 25 ms budget copied 300 rows/s: every batch waited ~1 s in
%% the queue), and an application call waits at most ?MAX_TURN_MS more,
%% far below erlmcp's 5 s. An older hybrid reports neither turn_us nor
%% waiting: Batch rows.
next_limit(Limit, Batch, TurnMs, Sc, CallUs, #{turn_us := Us, waiting := Waiting}) ->
    case Waiting of
        0 -> min(Batch, 2 * Limit);
        _ when Sc =:= 0 -> Limit;
        _ ->
            BudgetUs = min(?MAX_TURN_MS * 1000, max(TurnMs * 1000, CallUs - Us)),
            max(min(Batch, ?MIN_ROWS), min(Batch, (Sc * BudgetUs) div max(Us, 1)))
    end;
next_limit(_Limit, Batch, _TurnMs, _Sc, _CallUs, _R) ->
    Batch.

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

reason({dets_near_limit, Size, Max}) -> migctl_dets:near_limit_text(Size, Max);
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

%% probe(DetsTab, Samples, IntervalMs) -> {ok, [{Proc, Qlen, Status, Frames}]}:
%% Samples looks, IntervalMs apart, at the processes every session call of
%% the service waits on: the store server (store_server/0), the DETS
%% server of DetsTab (when open), Mnesia's transaction manager and the
%% change recorder. Each look is, for each process there, its message
%% queue length, its status and the top of its stack as <<"m:f/a">>
%% binaries (at most 6 frames). How clients' timeouts during a big run
%% were traced to their cause (a cleaner's scan holding the DETS server,
%% a remote select in the store server, DETS re-hashing): migctl
%% aggregates the looks (package probe). At most 25 looks a call, so that
%% no call runs this module's code for long.
probe(DetsTab, Samples, IntervalMs) when is_integer(Samples), Samples > 0, Samples =< 25,
                                         is_integer(IntervalMs), IntervalMs >= 0 ->
    safe(fun() ->
        %% dets_server's registry, not dets:info/2: a table still being
        %% opened (the repair after a crash, minutes for a big file)
        %% answers dets:info only once it is open, and a probe is what
        %% an operator runs to see why a node is slow; its process is
        %% then in dets:init/2, and the look shows it.
        Dets = case catch dets_server:get_pid(DetsTab) of
                   P when is_pid(P) -> P;
                   _ -> undefined
               end,
        Procs = [{store, store_server()}, {dets, Dets}, {mnesia_tm, whereis(mnesia_tm)},
                 {recorder, whereis(migctl_recorder)}],
        {ok, lists:append([probe_once(Procs, I, IntervalMs) || I <- lists:seq(1, Samples)])}
    end).

probe_once(Procs, I, IntervalMs) ->
    case I of
        1 -> ok;
        _ -> timer:sleep(IntervalMs)
    end,
    [{Name, Q, S, [frame(F) || F <- lists:sublist(St, 6)]}
     || {Name, Pid} <- Procs, is_pid(Pid),
        [{message_queue_len, Q}, {status, S}, {current_stacktrace, St}]
            <- [erlang:process_info(Pid, [message_queue_len, status, current_stacktrace])]].

frame({M, F, A, _}) when is_list(A) -> frame({M, F, length(A), []});
frame({M, F, A, _}) ->
    iolist_to_binary([atom_to_binary(M), $:, atom_to_binary(F), $/, integer_to_binary(A)]).

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

%% table_copies(Tab) -> {ok, [{Node, Type, Running}]}: where Tab has a
%% replica (disc_copies, ram_copies or disc_only_copies) and whether
%% Mnesia runs there.
table_copies(Tab) ->
    safe(fun() ->
        lists:member(Tab, mnesia:system_info(tables)) orelse fail(no_such_table),
        Up = mnesia:system_info(running_db_nodes),
        {ok, [{N, Type, lists:member(N, Up)}
              || Type <- [disc_copies, ram_copies, disc_only_copies],
                 N <- mnesia:table_info(Tab, Type)]}
    end).

%% drop_copy(Tab, Node) -> {ok, dropped | absent}: remove Node's replica of
%% Tab (mnesia:del_table_copy), for a backfill that loads one replica and
%% adds the others afterwards in bulk (add_copy/4): every row committed to
%% a table is applied on each replica, and at 1.4M rows applying them on
%% five replicas is what limited the backfill, where Mnesia's own table
%% copy moves a table in bulk. Never the last replica. Node's change
%% recorder loses its subscription with the replica (Mnesia drops it
%% silently) and is told to notice.
drop_copy(Tab, Node) ->
    safe(fun() ->
        Copies = copies(Tab),
        case lists:member(Node, Copies) of
            false -> {ok, absent};
            true when length(Copies) =< 1 -> fail(last_copy);
            true ->
                case mnesia:del_table_copy(Tab, Node) of
                    {atomic, ok} ->
                        {migctl_recorder, Node} ! resubscribe,
                        {ok, dropped};
                    {aborted, R} -> fail(iolist_to_binary(io_lib:format("del_table_copy ~s ~s: ~0P", [Tab, Node, R, 20])))
                end
        end
    end).

%% add_copy(Tab, Node, Type, TimeoutMs) -> {ok, added | present, Millis}:
%% add Node's replica of Tab (mnesia:add_table_copy: Mnesia loads it from
%% a live replica in bulk while transactions go on, and keeps it in step
%% with the commits made meanwhile), wait until it is loaded there, and
%% tell Node's change recorder to subscribe again (its coverage starts now:
%% the node applied nothing while it had no replica).
add_copy(Tab, Node, Type, Timeout) when is_atom(Type) ->
    safe(fun() ->
        T0 = erlang:monotonic_time(millisecond),
        R = case lists:member(Node, copies(Tab)) of
                true -> present;
                false ->
                    case mnesia:add_table_copy(Tab, Node, Type) of
                        {atomic, ok} -> added;
                        {aborted, {already_exists, _, _}} -> present;
                        {aborted, E} -> fail(iolist_to_binary(io_lib:format("add_table_copy ~s ~s: ~0P", [Tab, Node, E, 20])))
                    end
            end,
        case rpc:call(Node, mnesia, wait_for_tables, [[Tab], Timeout], Timeout + 5000) of
            ok -> ok;
            Other -> fail(iolist_to_binary(io_lib:format("wait_for_tables on ~s: ~0P", [Node, Other, 10])))
        end,
        {migctl_recorder, Node} ! resubscribe,
        {ok, R, erlang:monotonic_time(millisecond) - T0}
    end).

copies(Tab) ->
    lists:member(Tab, mnesia:system_info(tables)) orelse fail(no_such_table),
    lists:append([mnesia:table_info(Tab, T) || T <- [disc_copies, ram_copies, disc_only_copies]]).

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

%% native_backfill(DetsTab, LikeTab, Later, Batch) -> {ok, Rows, CopyUs,
%% [{Node, AddUs}]}: the big run's reference for the whole backfill, the
%% same work done by hand on the node with no tool: native_copy/3 into a
%% scratch table shaped like LikeTab (the session table), then, when Later
%% is true (as `backfill --replicate-after`), the scratch table is created
%% on this node only and Mnesia's add_table_copy adds each of LikeTab's
%% other replicas in turn, each waited for; when false it has LikeTab's
%% replicas from the start and every row is applied on each. The scratch
%% table (migctl_native_ref, never a session table) is deleted at the end,
%% failed or not. The application writes the session table, not this one,
%% so the reference's replica copies hold no client waiting.
native_backfill(Dets, Like, Later, Batch) ->
    safe(fun() ->
        Scratch = migctl_native_ref,
        lists:member(Scratch, mnesia:system_info(tables)) andalso
            fail(<<"migctl_native_ref exists (an interrupted reference run?): delete it first">>),
        Replicas = mnesia:table_info(Like, disc_copies),
        Others = Replicas -- [node()],
        Start = case Later of true -> [node()]; false -> Replicas end,
        Def = [{attributes, mnesia:table_info(Like, attributes)},
               {type, mnesia:table_info(Like, type)},
               {disc_copies, Start}],
        case mnesia:create_table(Scratch, Def) of
            {atomic, ok} -> ok;
            {aborted, E} -> fail(iolist_to_binary(io_lib:format("create_table: ~0P", [E, 20])))
        end,
        try
            {ok, Rows, CopyUs} = native_copy(Dets, Scratch, Batch),
            Adds = case Later of
                       false -> [];
                       true ->
                           [begin
                                T0 = erlang:monotonic_time(microsecond),
                                {atomic, ok} = mnesia:add_table_copy(Scratch, N, disc_copies),
                                ok = rpc:call(N, mnesia, wait_for_tables, [[Scratch], infinity], infinity),
                                {N, erlang:monotonic_time(microsecond) - T0}
                            end || N <- Others]
                   end,
            {ok, Rows, CopyUs, Adds}
        after
            mnesia:delete_table(Scratch)
        end
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

%% ------------------------------------------------- persistence verification

%% migctl verify persistence on a node running the hybrid: the persistence
%% watch of the hybrid (see its module: every id the application touches is
%% recorded in a DETS file that a restart keeps), an exact snapshot of one
%% digest per session before and after the restart, and the touched set.
%% Requests go through the store server's fetch door, {migctl_persist, Req};
%% an older hybrid answers {error, not_found} (the id is just not found):
%% hybrid_without_watch.

%% persist_watch(on, Token, TtlMs) -> {ok, File}; persist_watch(off, Token, _)
%% -> {ok, Stopped}. Token: a binary migctl chose; off with another token
%% leaves that other watch alone.
persist_watch(on, Token, TtlMs) ->
    safe(fun() ->
        #{file := F} = persist_door({watch_on, Token, TtlMs}, 10000),
        {ok, F}
    end);
persist_watch(off, Token, _) ->
    safe(fun() ->
        #{stopped := S} = persist_door({watch_off, Token}, 10000),
        {ok, S}
    end).

%% persist_snapshot(Tab, How, TimeoutMs) -> {ok, Frames, Count, NodeNowMs}
%% Frames: <<Kind:8, Len:32, Id:Len/binary, Digest:64, ExpiresAt:64>>* for
%% every session of the DETS table Tab; Kind 0: Id is the binary id, 1: it
%% is term_to_binary of a non-binary id. Digest: phash2 of the whole value
%% (last_accessed included: a session no client touched keeps it too), two
%% 32-bit hashes. ExpiresAt: last_accessed + timeout_ms, 0 for never.
%% How = door: the keys are listed in one turn of the store server (exact:
%% no application write in between); the values come from a traversal of
%% the file from here (sequential: 7x faster than reading 100,000 sessions
%% by key here), and the listed keys the traversal missed (it can, while
%% the application writes) are read by key. A value that changes after the
%% listing belongs to a session a client touched, which is not judged.
%% How = direct: the traversal alone, exact only if nothing writes.
persist_snapshot(Tab, How, TimeoutMs) ->
    safe(fun() ->
        Keys = case How of
                   door -> maps:get(keys, persist_door({keys, Tab}, TimeoutMs));
                   direct -> all
               end,
        Want = case Keys of
                   all -> all;
                   _ -> maps:from_keys(Keys, [])
               end,
        Got = persist_traverse(Tab, Want),
        Missed = case Keys of
                     all -> [];
                     _ -> [K || K <- Keys, not is_map_key(K, Got)]
                 end,
        All = persist_by_key(Tab, Missed, Got),
        Frames = maps:fold(fun(Id, {D, E}, A) -> [<<(persist_id(Id))/binary, D:64, E:64>> | A] end, [], All),
        {ok, iolist_to_binary(Frames), map_size(All), erlang:system_time(millisecond)}
    end).

%% persist_traverse(Tab, Want) -> #{Id => {Digest, ExpiresAt}}: a traversal
%% of the file (fixed while it runs: DETS releases the fixation if this
%% process dies), only ids in Want (a map) unless Want = all.
persist_traverse(Tab, Want) ->
    ok = dets:safe_fixtable(Tab, true),
    try
        persist_chunks(dets:select(Tab, [{'_', [], ['$_']}], 1000), Want, #{})
    after
        dets:safe_fixtable(Tab, false)
    end.

persist_chunks('$end_of_table', _Want, Acc) -> Acc;
persist_chunks({error, R}, _Want, _Acc) -> fail(reason({dets, R}));
persist_chunks({Rows, C}, Want, Acc0) ->
    Acc = lists:foldl(fun({Id, S}, A) when Want =:= all; is_map_key(Id, Want) ->
                              A#{Id => {persist_digest(S), persist_expires(S)}};
                         (_, A) -> A
                      end, Acc0, Rows),
    persist_chunks(dets:select(C), Want, Acc).

persist_by_key(_Tab, [], Acc) -> Acc;
persist_by_key(Tab, Keys, Acc0) ->
    {Batch, Rest} = lists:split(min(1000, length(Keys)), Keys),
    Objs = case catch dets:lookup_keys(Tab, Batch) of
               L when is_list(L) -> L;
               {error, R} -> fail(reason({dets, R}));
               {'EXIT', _} ->
                   lists:append([case dets:lookup(Tab, K) of
                                     L when is_list(L) -> L;
                                     {error, R} -> fail(reason({dets, R}))
                                 end || K <- Batch])
           end,
    Acc = lists:foldl(fun({Id, S}, A) -> A#{Id => {persist_digest(S), persist_expires(S)}} end, Acc0, Objs),
    persist_by_key(Tab, Rest, Acc).

persist_id(Id) when is_binary(Id) -> <<0:8, (byte_size(Id)):32, Id/binary>>;
persist_id(Id) -> B = term_to_binary(Id), <<1:8, (byte_size(B)):32, B/binary>>.

persist_digest(S) -> (erlang:phash2(S, 1 bsl 32) bsl 32) bor erlang:phash2({S}, 1 bsl 32).

persist_expires(#{last_accessed := L, timeout_ms := T}) when is_integer(L), is_integer(T), L + T > 0 -> L + T;
persist_expires(_) -> 0.

%% persist_touched(Token, TimeoutMs)
%%   -> {ok, on, IdFrames, Count, Cleanup, Unclean, Resumed}
%%                         | {ok, off, Why}
%% IdFrames: <<Kind:8, Len:32, Id:Len/binary>>* of every id touched since
%% the watch began (read in one turn of the store server); Cleanup: the
%% store's expiry cleanup deleted sessions meanwhile; Unclean: the watch's
%% file was repaired after a kill (ids of the last seconds may be missing);
%% Resumed: the store server's init reopened the watch (it restarted).
%% Why (off): expired | failed | replaced | off | none (no watch since the
%% node started: it came back without the file).
persist_touched(Token, TimeoutMs) ->
    safe(fun() ->
        case persist_door({touched, Token}, TimeoutMs) of
            #{on := true, ids := Ids, unclean := Unclean, resumed := Resumed} ->
                Sessions = [Id || Id <- Ids, Id =/= '$cleanup'],
                {ok, on, << <<(persist_id(Id))/binary>> || Id <- Sessions >>, length(Sessions),
                 lists:member('$cleanup', Ids), Unclean, Resumed};
            #{on := false, ended := Why} ->
                {ok, off, Why}
        end
    end).

persist_door(Req, TimeoutMs) ->
    Server = must_hybrid(),
    try gen_server:call(Server, {fetch, {migctl_persist, Req}}, TimeoutMs) of
        {ok, {migctl_persist_reply, {ok, #{} = R}}} -> R;
        {ok, {migctl_persist_reply, {error, R}}} -> fail(reason(R));
        {error, not_found} -> fail(hybrid_without_watch);
        Other -> fail(reason({unexpected_reply, Other}))
    catch
        exit:{timeout, _} -> fail(timeout);
        exit:{Why, _} when Why =:= noproc; Why =:= normal; Why =:= shutdown; Why =:= killed -> fail(store_server_died);
        exit:{{nodedown, _}, _} -> fail(store_server_died);
        exit:{{shutdown, _}, _} -> fail(store_server_died);
        exit:{Why, _} -> fail(reason({store_server_crashed, Why}))
    end.
