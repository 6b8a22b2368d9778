%% migctl_cluster: the node-side half of `migctl cluster' (package cluster).
%%
%% What it does on a node: describe the node's own view of the Mnesia
%% cluster, checksum the node's LOCAL copy of a table in hash buckets, list
%% the keys of some buckets with their times and digests, hand out rows as
%% term_to_binary blobs, run the master-nodes reload that makes a losing node
%% take the winner's data, apply merge decisions conditionally, and run
%% event forwarders that pass Mnesia system events and node up/down to the
%% migctl process that asked for them.
%%
%% Contract with Go (same as migctl_agent): every exported function catches
%% everything and returns {ok, ...} or {error, Atom | Binary}; sessions only
%% leave as term_to_binary blobs inside framed binaries, never as maps.
%%
%% Hash placement and bucket sums are migctl_buckets's:
%% H = erlang:phash2(Id, 2^32); bucket B of N holds H*N div 2^32.
-module(migctl_cluster).

%% safe/1 and fail/1 are the agents' one error convention (migctl_lib).
-import(migctl_lib, [safe/1, fail/1]).
-export([version/0, view/1, get_rows/2, downs/1,
         prepare_reload/1, finish_reload/2, merge/3, connect/1, forwarder/2, forwarder_stop/1,
         join/3, del_copies/2, del_schema/1, stop_mnesia/0, fence/3, unfence/0,
         fence_flag/1, fence_held/1, recorder_info/1, changes/2, changed_since/2, clock/0,
         reload_state/0]).

-define(VSN, 8).
%% Read by erlmcp_session_backend_hybrid: while this persistent_term holds a
%% time in the future, its dual-write phases write Mnesia in transactions
%% (which wait on the fence's lock) instead of sync_dirty (which would not).
-define(FENCE_UNTIL, migctl_fence_until).
-define(FENCE, migctl_fence).
%% Set by prepare_reload/1 right before it stops Mnesia, erased by
%% finish_reload/2 once Mnesia runs again: a resumed heal tells a loser
%% the interrupted run stopped (every write it acknowledged was merged:
%% it was fenced until then) from one stopped by someone else.
-define(RELOADING, migctl_reloading).
-define(HOLD, migctl_restart_hold).
%% A hold on the application's supervisors ends by itself after this long
%% (migctl gone between prepare_reload and finish_reload).
-define(HOLD_MS, 120000).
-define(SPACE, 4294967296).

version() -> {ok, ?VSN}.


%% ------------------------------------------------------------------ view

%% view(Tabs) -> {ok, Props}: this node's own view of the cluster. Tabs are
%% the tables to describe in detail (the others are listed by name only).
view(Tabs) ->
    safe(fun() ->
        Running = mnesia:system_info(is_running),
        Base = [{node, node()}, {connected, nodes()}, {hidden, nodes(hidden)},
                {is_running, Running},
                {recorder, try recorder(Tabs) catch _:_ -> {ok, false, [], 0, 0, 0, 0, 0, 0} end}],
        case Running of
            yes ->
                Tables = [table_view(T) || T <- Tabs,
                                           lists:member(T, mnesia:system_info(tables))],
                {ok, Base ++
                     [{cookie, iolist_to_binary(io_lib:format("~0p", [mnesia:table_info(schema, cookie)]))},
                      {db_nodes, mnesia:system_info(db_nodes)},
                      {running_db_nodes, mnesia:system_info(running_db_nodes)},
                      {schema_location, mnesia:system_info(schema_location)},
                      {use_dir, mnesia:system_info(use_dir)},
                      {tables, Tables},
                      {all_tables, mnesia:system_info(tables)},
                      {master_nodes, [{T, mnesia:table_info(T, master_nodes)} ||
                                         T <- mnesia:system_info(tables)]}]};
            _ ->
                %% db_nodes can be read from the schema on disc even when
                %% Mnesia is stopped; it says which cluster the node belongs to.
                Db = try mnesia:system_info(db_nodes) catch _:_ -> [] end,
                {ok, Base ++ [{db_nodes, Db}, {running_db_nodes, []}, {tables, []}]}
        end
    end).

table_view(T) ->
    Storage = mnesia:table_info(T, storage_type),
    Size = case Storage of
               unknown -> -1;
               _ -> mnesia:table_info(T, size)
           end,
    Loaded = try mnesia:table_info(T, where_to_read) of
                 nowhere -> nowhere;
                 N -> N
             catch _:_ -> nowhere
             end,
    {T, Storage, Size, Loaded,
     mnesia:table_info(T, active_replicas),
     mnesia:table_info(T, disc_copies),
     mnesia:table_info(T, ram_copies),
     mnesia:table_info(T, master_nodes)}.

%% ---------------------------------------------------------- local copies

%% The bucket sums and the keys of a node's local copy (verify-replication
%% and the heal plan) are migctl_buckets's: sums/3, keys/3 and of_ids/3 of
%% {mnesia, Tab} with the record digest, phash2({Id, Session, WriteTime}),
%% the digest merge/3 compares (digest/2 below).

wtime(W) when is_integer(W) -> W;
wtime(_) -> 0.

local(Tab) -> migctl_lib:local_copy(Tab).

%% get_rows(Tab, Ids) -> {ok, Frames}: the local copy's rows for the framed
%% ids (<<Len:32, Id>>*), as <<IdLen:32, Id, BlobLen:32, Blob>> with Blob the
%% term_to_binary of the session; absent ids are left out.
get_rows(Tab, Ids) ->
    safe(fun() ->
        local(Tab),
        {ok, iolist_to_binary(
               [begin B = term_to_binary(S),
                      [<<(byte_size(Id)):32>>, Id, <<(byte_size(B)):32>>, B] end
                || Id <- ids(Ids, []), {_, _, S, _} <- ets:lookup(Tab, Id)])}
    end).

ids(<<>>, Acc) -> lists:reverse(Acc);
ids(<<L:32, Id:L/binary, Rest/binary>>, Acc) -> ids(Rest, [Id | Acc]);
ids(_, _) -> fail(bad_frame).

%% -------------------------------------------------------------- evidence

%% recorder_info(Tabs) -> {ok, Running, [{Tab, Since, Cleared}], Keys,
%% MemoryBytes, WindowMs, Writes, Deletes, Pruned}: what this node's change
%% recorder (migctl_recorder, in the migctl_node library) covers. Since is
%% -1 while a table is not subscribed (Mnesia stopped, no such table);
%% Running is false when the library is not there or its recorder is not
%% running.
recorder_info(Tabs) ->
    safe(fun() -> recorder(Tabs) end).

recorder(Tabs) ->
    begin
        I = case code:ensure_loaded(migctl_recorder) of
                {module, _} -> catch migctl_recorder:info();
                _ -> #{running => false}
            end,
        case I of
            #{running := true, tables := Ts} ->
                By = maps:from_list([{maps:get(table, T), T} || T <- Ts]),
                {ok, true,
                 [case maps:find(T, By) of
                      {ok, #{since := S, cleared := C}} -> {T, int(S), int(C)};
                      error -> {T, -1, 0}
                  end || T <- Tabs],
                 maps:get(keys, I, 0), maps:get(memory_bytes, I, 0), maps:get(window_ms, I, 0),
                 maps:get(writes, I, 0), maps:get(deletes, I, 0), maps:get(pruned, I, 0)};
            _ -> {ok, false, [], 0, 0, 0, 0, 0, 0}
        end
    end.

int(I) when is_integer(I) -> I;
int(_) -> -1.

%% changes(Tab, Ids) -> {ok, Frames}: the last recorded change of each of
%% the framed ids (<<Len:32, Id>>*) on this node, as
%% <<IdLen:32, Id, Op:8 (1 write, 2 delete), Micros:64/signed, Digest:32,
%%   OriginLen:16, Origin>>
%% (Micros: the recorder's time of the change in microseconds; a recorder
%% older than lookup_us/2 keeps milliseconds, answered as Millis * 1000)
%% (Digest: of the row written, the record digest migctl_buckets reports
%% for it, see digest/2; 0 for a delete); ids without a recorded change
%% are left out.
changes(Tab, Ids) ->
    safe(fun() ->
        %% Commits already sent here are applied and recorded first, so
        %% that this node's record agrees with the other nodes' records of
        %% its island read at the same moment (the merge compares with it).
        tm_barrier(),
        L = case code:is_loaded(migctl_recorder) of
                {file, _} -> lookup_us(Tab, ids(Ids, []));
                false -> []
            end,
        {ok, iolist_to_binary(
               [begin O = atom_to_binary(Origin),
                      [<<(byte_size(Id)):32>>, Id,
                       <<(case Op of write -> 1; delete -> 2 end):8, Us:64/signed, Dg:32,
                         (byte_size(O)):16>>, O] end
                || {Id, Op, Us, Origin, Dg} <- L, is_binary(Id)])}
    end).

%% changed_since(Tab, Millis) -> {ok, Frames} | {ok, unknown}: the keys
%% whose last recorded change on this node is at or after Millis, as
%% <<Len:32, Id>>*; unknown when the recorder does not cover Tab back to
%% Millis (not running, or restarted since), so the caller must read in
%% full.
changed_since(Tab, Millis) ->
    safe(fun() ->
        Covered = case recorder([Tab]) of
                      {ok, true, [{Tab, Since, _}], _, _, _, _, _, _} -> Since >= 0 andalso Since =< Millis;
                      _ -> false
                  end,
        case Covered of
            false -> {ok, unknown};
            true ->
                {ok, iolist_to_binary([[<<(byte_size(Id)):32>>, Id]
                                       || Id <- migctl_recorder:changed_since(Tab, Millis), is_binary(Id)])}
        end
    end).

%% ------------------------------------------------------------------ heal

%% downs(Peers) -> {ok, [{Peer, Millis, ResolutionMillis}]}: when this node
%% last saw Mnesia on each of Peers go down (the split, as this node lived
%% it). Mnesia keeps the time of the last mnesia_down per node in
%% mnesia_decision, in local time to the second (Millis is then the start of
%% that second, ResolutionMillis 1000); a forwarder (migctl cluster watch)
%% that saw the event keeps the exact time in a persistent_term, used when it
%% belongs to the same event (ResolutionMillis 1). Peers without a record
%% are left out.
downs(Peers) ->
    safe(fun() ->
        {ok, lists:append([down(P) || P <- Peers, P =/= node()])}
    end).

down(P) ->
    Rec = try ets:lookup(mnesia_decision, P) catch _:_ -> [] end,
    Exact = persistent_term:get({?MODULE, mnesia_down, P}, undefined),
    case [{D, T} || {mnesia_down, _, D, T} <- Rec] of
        [{D, T}] ->
            Ms = local_ms({D, T}),
            case Exact of
                E when is_integer(E), E >= Ms, E < Ms + 1000 -> [{P, E, 1}];
                _ -> [{P, Ms, 1000}]
            end;
        _ when is_integer(Exact) -> [{P, Exact, 1}];
        _ -> []
    end.

local_ms(Local) ->
    [U | _] = case calendar:local_time_to_universal_time_dst(Local) of
                  [] -> [Local];
                  L -> L
              end,
    (calendar:datetime_to_gregorian_seconds(U) - 62167219200) * 1000.

%% connect(Nodes) -> {ok, [{Node, true|false}]}: connect this node to each
%% of Nodes explicitly (dist_auto_connect once, and
%% prevent_overlapping_partitions, leave pairs unconnected after a split).
connect(Nodes) ->
    safe(fun() -> {ok, [{N, net_kernel:connect_node(N)} || N <- Nodes, N =/= node()]} end).

%% stop_mnesia() -> {ok, stopped}
stop_mnesia() ->
    safe(fun() ->
        case mnesia:stop() of
            stopped -> _ = free_tm_waiters(), {ok, stopped};
            {error, R} -> fail(iolist_to_binary(io_lib:format("mnesia:stop: ~0P", [R, 10])))
        end
    end).

%% free_tm_waiters() -> N: Mnesia's transaction manager answers a process
%% that starts a transaction (mnesia_tm:req/1: whereis, send, then wait in
%% rec/2 for the reply or for an 'EXIT' of the manager, which only comes
%% to a process linked to it and trapping exits; the link is made when
%% the request is served). A request that reaches the manager after it
%% took its shutdown is never served: a process that began a transaction
%% at the moment Mnesia stopped waits in mnesia_tm:rec/2 for ever, on a
%% manager that no longer exists, and the restarted Mnesia cannot wake it.
%% erlmcp's store server is such a process when a client's call is in
%% it: it then answers nobody, its supervisor sees it alive, and every
%% session call on the node times out until someone kills it. (Measured
%% with 20 processes starting transactions in a loop: a mnesia:stop/0 left
%% 1 to 20 of them waiting, 9 stops of 10; seen in the heal tests under
%% load as a loser that served nothing after its reload.) The process
%% waits for {'EXIT', Pid, _} from that manager's pid (rec/2 matches any
%% message of that shape): sent here, mnesia:transaction returns
%% {aborted, {node_not_running, Node}} to it, as it would have had it
%% come a moment later, and the application carries on. Only a process in
%% mnesia_tm:rec whose frame holds a pid of this node that is dead is
%% sent one; one waiting on the running manager is left alone. Returns
%% how many processes were freed. Cost: one process_info per process
%% (100,000 processes walked in 0.3 s), so it runs once per reload, after
%% the tables are loaded, not while Mnesia is down.
free_tm_waiters() ->
    Me = self(),
    length([P || P <- processes(), P =/= Me, free_tm_waiter(P)]).

free_tm_waiter(P) ->
    case process_info(P, current_function) of
        {current_function, {mnesia_tm, rec, A}} when A =:= 1; A =:= 2 ->
            case process_info(P, backtrace) of
                {backtrace, B} ->
                    Dead = [D || D <- frame_pids(B), not is_process_alive(D)],
                    [P ! {'EXIT', D, shutdown} || D <- Dead],
                    Dead =/= [];
                _ -> false
            end;
        _ -> false
    end.

%% The local pids among the current frame's registers, from the text of a
%% backtrace (the frame ends at the first return address).
frame_pids(B) ->
    [Top | _] = binary:split(B, <<"Return addr">>),
    case re:run(Top, <<"<0\\.[0-9]+\\.[0-9]+>">>, [global, {capture, first, list}]) of
        {match, Ms} -> lists:usort([list_to_pid(M) || [M] <- Ms]);
        nomatch -> []
    end.

%% fence(Tabs, Owner, Timeout) -> {ok, fenced} | {ok, not_running}:
%% hold a write lock on every table of Tabs in this node's island, so that
%% erlmcp's transactions on it wait instead of committing, until Mnesia
%% stops here (prepare_reload: the waiting transactions then abort and
%% their callers never see an acknowledgement), unfence/0 is called, the
%% migctl node Owner goes down, or Timeout ms pass. The heal reads the
%% losing side's changes a last time under this lock, so no write
%% acknowledged on the loser is left behind. Dirty writes ignore locks;
%% erlmcp writes in transactions. {ok, not_running}: Mnesia is stopped
%% here (a heal resumed after its reload began), there is nothing to fence.
fence(Tabs, Owner, Timeout) ->
    safe(fun() ->
        case mnesia:system_info(is_running) of
            yes ->
                is_pid(whereis(?FENCE)) andalso fail(already_fenced),
                [lists:member(T, mnesia:system_info(tables)) orelse fail(no_such_table) || T <- Tabs],
                Caller = self(),
                Ref = make_ref(),
                {Pid, M} = spawn_monitor(fun() -> fence_init(Caller, Ref, Tabs, Owner, Timeout) end),
                receive
                    %% The lock is ours: every loser's write before it
                    %% is applied on this node too (the heal reads the
                    %% losers' rows here) once tm_barrier/0 returns.
                    {Ref, locked} -> erlang:demonitor(M, [flush]), tm_barrier(), {ok, fenced};
                    {'DOWN', M, process, Pid, R} ->
                        fail(iolist_to_binary(io_lib:format("fence: ~0P", [R, 10])))
                after 15000 ->
                    exit(Pid, kill),
                    fail(fence_timeout)
                end;
            _ ->
                {ok, not_running}
        end
    end).

fence_init(Caller, Ref, Tabs, Owner, Timeout) ->
    true = register(?FENCE, self()),
    Owner =:= node() orelse erlang:monitor_node(Owner, true),
    mnesia:transaction(
      fun() ->
              [mnesia:lock({table, T}, write) || T <- Tabs],
              %% Only now: a transaction restarted while it waited for a
              %% lock has not said so yet.
              Caller ! {Ref, locked},
              receive
                  release -> ok;
                  {nodedown, Owner} -> ok
              after Timeout -> ok
              end
      end).

%% unfence() -> {ok, released | none}: end this node's fence, if any.
unfence() ->
    safe(fun() ->
        case whereis(?FENCE) of
            undefined -> {ok, none};
            Pid ->
                M = monitor(process, Pid),
                Pid ! release,
                receive {'DOWN', M, process, Pid, _} -> {ok, released}
                after 5000 -> exit(Pid, kill), {ok, released}
                end
        end
    end).

%% fence_flag(UntilMs | {for, Ms}) -> {ok, set | cleared}: on a losing
%% node, tell dirty writers (the hybrid backend's dual-write phases) to
%% take locks until UntilMs (erlang:system_time(millisecond)), or for Ms
%% from now by this node's clock (what migctl sends: its own clock need
%% not agree with the node's); 0 clears it. Set on every losing node
%% before the fence's lock is taken.
fence_flag({for, Ms}) when is_integer(Ms), Ms > 0 ->
    fence_flag(erlang:system_time(millisecond) + Ms);
fence_flag(Until) ->
    safe(fun() ->
        case Until of
            0 -> _ = persistent_term:erase(?FENCE_UNTIL), {ok, cleared};
            _ -> persistent_term:put(?FENCE_UNTIL, Until), {ok, set}
        end
    end).

%% clock() -> {ok, Millis}: this node's erlang:system_time(millisecond),
%% the clock its change recorder stamps changes with. A heal asks for it
%% before reading a loser's changes, so that the next read of what changed
%% since starts from the node's own time, not migctl's: the host migctl
%% runs on need not agree with the node's clock (and an Erlang node's
%% system time does not follow a step of the OS clock made after it
%% started, in the default no_time_warp mode).
clock() ->
    {ok, erlang:system_time(millisecond)}.

%% fence_held(Tabs) -> {ok, true | false}: whether this node's fence still
%% holds its write lock on every table of Tabs (a fence whose owner went
%% away, whose time ran out, or whose transaction Mnesia restarted does
%% not). Asked right before the losers' Mnesia stops: if the lock was lost,
%% writes may have been acknowledged after the last read of the changes.
fence_held(Tabs) ->
    safe(fun() ->
        case whereis(?FENCE) of
            undefined -> {ok, false};
            Pid ->
                Held = [T || {{T, _}, write, {tid, _, P}} <- mnesia:system_info(held_locks), P =:= Pid],
                {ok, lists:all(fun(T) -> lists:member(T, Held) end, Tabs)}
        end
    end).

%% prepare_reload(Masters) -> {ok, stopped}: first half of making this node
%% take the masters' copy of every table: set the master nodes (they are
%% kept locally across the Mnesia restart) and stop Mnesia. The Erlang node
%% keeps running, and with it the application.
prepare_reload(Masters) ->
    safe(fun() ->
        case mnesia:system_info(is_running) of
            yes -> ok;
            _ -> ok = start_mnesia()
        end,
        ok = mnesia:set_master_nodes(Masters),
        hold_restarts(),
        persistent_term:put(?RELOADING, Masters),
        stopped = mnesia:stop(),
        %% The processes this stop leaves waiting on it are freed by
        %% finish_reload (free_tm_waiters/0), once Mnesia runs again: they
        %% could not have served without Mnesia anyway, and a walk over
        %% every process here would lengthen the time Mnesia is down.
        {ok, stopped}
    end).

%% reload_state() -> {ok, running | reload_stopped | stopped}: whether
%% Mnesia runs here, and if not, whether prepare_reload/1 stopped it (and
%% finish_reload/2 has not started it yet). The mark lives in the Erlang
%% node: a node restarted since answers stopped.
reload_state() ->
    safe(fun() ->
        case mnesia:system_info(is_running) of
            yes -> {ok, running};
            _ ->
                case persistent_term:get(?RELOADING, undefined) of
                    undefined -> {ok, stopped};
                    _ -> {ok, reload_stopped}
                end
        end
    end).

%% hold_restarts(): Mnesia links every transaction to its transaction
%% manager, so a process inside a transaction when Mnesia stops is killed
%% (or, trapping exits, gets an exception out of mnesia:transaction). The
%% fence makes that likely: the losers' writers wait in their
%% transactions. erlmcp's store server catches neither: it dies, and its
%% supervisor restarts it at once, while Mnesia is still down; its
%% backend's init fails, the restarts exhaust the supervisor's intensity in
%% milliseconds and the application stops. So the supervisors of the
%% processes that can be caught (the session store servers, under the
%% names erlmcp and the fixture register, the hybrid backend's server, and
%% whatever is inside a transaction now) are suspended (sys:suspend) until
%% Mnesia is back with its tables (finish_reload), or ?HOLD_MS at most:
%% their dead children are restarted then, once, and start. The clients of
%% such a store server get errors in between, as they would from a node
%% whose Mnesia restarts.
hold_restarts() ->
    release_restarts(),
    Sups = lists:usort([S || P <- at_risk(), S <- [supervisor_of(P)], S =/= undefined]),
    Held = [S || S <- Sups, (catch sys:suspend(S, 2000)) =:= ok],
    Me = self(),
    {Pid, M} = spawn_monitor(fun() ->
                                     true = register(?HOLD, self()),
                                     Me ! {?HOLD, ready},
                                     receive release -> ok after ?HOLD_MS -> ok end,
                                     [catch sys:resume(S, 5000) || S <- Held]
                             end),
    receive
        {?HOLD, ready} -> erlang:demonitor(M, [flush]), ok;
        {'DOWN', M, process, Pid, _} -> [catch sys:resume(S, 5000) || S <- Held], ok
    end.

%% release_restarts(): resume what hold_restarts/0 suspended.
release_restarts() ->
    case whereis(?HOLD) of
        undefined -> ok;
        Pid ->
            M = monitor(process, Pid),
            Pid ! release,
            receive {'DOWN', M, process, Pid, _} -> ok after 10000 -> ok end
    end.

at_risk() ->
    Known = [whereis(N) || N <- [erlmcp_session_backend, erlmcp_session_store]]
        ++ [catch erlmcp_session_backend_hybrid:server()],
    InTx = [P || P <- processes(), P =/= self(),
                 case process_info(P, dictionary) of
                     {dictionary, D} -> lists:keymember(mnesia_activity_state, 1, D);
                     _ -> false
                 end],
    [P || P <- Known ++ InTx, is_pid(P)].

%% The supervisor that restarts P (its parent, from proc_lib's
%% '$ancestors'), unless it belongs to Mnesia or OTP itself.
supervisor_of(P) ->
    case process_info(P, dictionary) of
        {dictionary, D} ->
            case proplists:get_value('$ancestors', D) of
                [Parent | _] ->
                    Sup = if is_atom(Parent) -> whereis(Parent); true -> Parent end,
                    case is_pid(Sup) andalso application:get_application(Sup) of
                        {ok, App} when App =/= mnesia, App =/= kernel, App =/= stdlib ->
                            case catch supervisor:count_children(Sup) of
                                L when is_list(L) -> Sup;
                                _ -> undefined
                            end;
                        _ -> undefined
                    end;
                _ -> undefined
            end;
        _ -> undefined
    end.

%% finish_reload(Tabs, Timeout) -> {ok, Millis, Detail}: second half: start Mnesia
%% (tables load from the masters), wait for Tabs, clear the master nodes.
%% The node must be connected to the masters.
finish_reload(Tabs, Timeout) ->
    safe(fun() ->
        try do_finish_reload(Tabs, Timeout)
        after
            %% Whatever happened: the supervisors must not stay suspended.
            release_restarts()
        end
    end).

do_finish_reload(Tabs, Timeout) ->
    T0 = erlang:monotonic_time(millisecond),
    Stale = case mnesia:system_info(is_running) of
                yes -> 0;
                _ ->
                    N = clear_stale_activities(),
                    ok = start_mnesia_retry(3),
                    N
            end,
    T1 = erlang:monotonic_time(millisecond),
    _ = persistent_term:erase(?RELOADING),
    R = mnesia:wait_for_tables(Tabs, Timeout),
    T2 = erlang:monotonic_time(millisecond),
    %% Mnesia and its tables are back: the store servers it killed can
    %% be restarted now (hold_restarts/0).
    release_restarts(),
    %% The fence ended with the Mnesia it locked.
    _ = persistent_term:erase(?FENCE_UNTIL),
    %% The change recorder (migctl_node) lost its subscriptions with
    %% Mnesia: have it take them again now rather than at its next poll.
    _ = catch migctl_recorder ! resubscribe,
    %% Clear the masters whatever happened: leaving them set would make
    %% every later restart of this node ignore its own copy.
    ok = mnesia:set_master_nodes([]),
    %% Last: it walks every process of the node.
    Freed = free_tm_waiters(),
    case R of
        ok -> {ok, T2 - T0, iolist_to_binary(io_lib:format("Mnesia started in ~b ms, tables loaded in ~b ms~s~s",
                                                           [T1 - T0, T2 - T1, stale_text(Stale), freed_text(Freed)]))};
        {timeout, Bad} -> fail(iolist_to_binary(io_lib:format("tables not loaded: ~p", [Bad])));
        {error, E} -> fail(iolist_to_binary(io_lib:format("wait_for_tables: ~0P", [E, 10])))
    end.

%% A process whose transaction was cut short by the stop of Mnesia (an
%% exception out of mnesia:transaction, caught by the application) keeps
%% that transaction in its dictionary (mnesia_activity_state); its next
%% transaction, on the restarted Mnesia, is then taken for a nested one of
%% the dead transaction and crashes mnesia_tm (function_clause in
%% add_coord_store), which fails the start. Mnesia is stopped here, so
%% every such entry is stale: erase it in each gen_server that holds one
%% (sys:replace_state runs the fun in that process); returns how many were
%% cleared.
clear_stale_activities() ->
    Me = self(),
    Ps = [P || P <- processes(), P =/= Me,
               case process_info(P, dictionary) of
                   {dictionary, D} -> lists:keymember(mnesia_activity_state, 1, D);
                   _ -> false
               end],
    Refs = [spawn_monitor(fun() ->
                                  catch sys:replace_state(P, fun(S) -> erase(mnesia_activity_state), S end, 2000)
                          end) || P <- Ps],
    [receive {'DOWN', R, process, _, _} -> ok after 3000 -> ok end || {_, R} <- Refs],
    length([P || P <- Ps,
                 case process_info(P, dictionary) of
                     {dictionary, D} -> not lists:keymember(mnesia_activity_state, 1, D);
                     _ -> true
                 end]).

freed_text(0) -> "";
freed_text(N) -> io_lib:format("; freed ~b process(es) left waiting on the stopped Mnesia (their transactions returned node_not_running)", [N]).

stale_text(0) -> "";
stale_text(N) -> io_lib:format("; cleared ~b process(es) left inside a transaction of the stopped Mnesia", [N]).

%% Mnesia's start right after a stop, with the application's transactions
%% retrying against it (writers that waited on the fence), was seen to fail
%% once: mnesia_tm crashed in add_coord_store on the id of a transaction
%% begun before the stop (function_clause in gb_trees:get), and the start
%% returned {normal, {mnesia_app, start, ...}}. Started again it comes up;
%% a start is what a resumed heal would do anyway.
start_mnesia_retry(1) -> start_mnesia();
start_mnesia_retry(N) ->
    case mnesia:start() of
        ok -> ok;
        {error, R} ->
            error_logger:warning_msg("migctl: mnesia:start failed (~0P), retrying~n", [R, 10]),
            timer:sleep(1000),
            start_mnesia_retry(N - 1)
    end.

start_mnesia() ->
    case mnesia:start() of
        ok -> ok;
        {error, R} -> fail(iolist_to_binary(io_lib:format("mnesia:start: ~0P", [R, 10])))
    end.

%% merge(Tab, Writes, Deletes) -> {ok, Written, Skipped, Deleted, Kept,
%% WinnerChanged, ChangedIds} in one transaction on the healed cluster.
%% Every change carries the condition under which it still applies, checked
%% against the row as it is now (under a write lock):
%%  Writes: <<IdLen:32, Id, BlobLen:32, Blob, Cond:8, Digest:32, Seen:64/signed>>*
%%    rows from the losing side;
%%  Deletes: <<IdLen:32, Id, Before:64/signed, Cond:8, Digest:32, Seen:64/signed>>*:
%%    the losing side deleted the key.
%% Cond 1 (evidence): the heal decided this change from the recorded
%%   history, when the winner's last change of the key was the older one.
%%   The winner kept taking traffic since, and a change it made after the
%%   decision is later than the loser's, so it wins (the later-change rule)
%%   and the decision no longer applies. The decision applies only while
%%   (a) the row is still the one the heal last read on the winner
%%   (Digest, the bucket digest of the record, or 0 for absent), and
%%   (b) this node's change recorder has no change of the key later than
%%   Seen, the time (µs) of the last change it had recorded when the
%%   decision was made (0: none; -1: that record was not read, (a) alone
%%   decides).
%%   (b) is what catches the changes (a) cannot see: a delete of a row
%%   already absent, or a write and a delete that leave the row absent
%%   again. The recorder is asked after the table lock is taken, so every
%%   commit that came before ours has been reported to it (Mnesia reports a
%%   commit before the transaction returns). A Cond 1 change that does not
%%   apply is counted in WinnerChanged and its id listed in ChangedIds
%%   (<<Len:32, Id>>*): changed on the winner during the heal, winner kept.
%% Cond 0 (inference, when a side has no record): a write applies when the
%%   key is absent or the stored session's last_accessed is older (else
%%   Skipped); a deletion unless the stored record was written at or after
%%   Before (else Kept).
%% A written row carries the write time in its last field, as erlmcp's
%% store/3 does.
merge(Tab, Writes, Deletes) ->
    safe(fun() ->
        Ws = rows(Writes, []),
        Ds = dels(Deletes, []),
        Watched = [Id || {Id, _, 1, _, Seen} <- Ws ++ Ds, Seen >= 0],
        %% Without a running recorder the merge could not tell whether the
        %% winner changed a key since the decision: stop (a resume decides
        %% again, from the records readable then).
        Watched =:= [] orelse recorder_running()
            orelse fail(<<"the change recorder on this node is not running (it was when the heal's decisions were made)">>),
        F = fun() ->
                %% One table lock rather than a row lock per change: each
                %% row lock is a round trip to every replica's lock manager,
                %% which made the merge (done while the losers' writers
                %% wait) the longest part of the fence.
                ok = mnesia:write_lock_table(Tab),
                %% A commit coordinated on another winner node before our
                %% lock was granted is applied here (and reported to the
                %% recorder) before we read the row: see tm_barrier/0.
                tm_barrier(),
                Rec = recorded(Tab, Watched),
                Now = erlang:system_time(millisecond),
                {W, S, C1} = lists:foldl(
                               fun({Id, New, Cond, Dg, Seen}, {W, S, C}) ->
                                       Cur = mnesia:read(Tab, Id, write),
                                       case write_applies(Cond, Dg, Id, New, Cur) of
                                           true when Cond =:= 1 ->
                                               case winner_changed(Rec, Id, Seen) of
                                                   false -> mnesia:write(Tab, {Tab, Id, New, Now}, write), {W + 1, S, C};
                                                   true -> {W, S, [Id | C]}
                                               end;
                                           true -> mnesia:write(Tab, {Tab, Id, New, Now}, write), {W + 1, S, C};
                                           false when Cond =:= 1 -> {W, S, [Id | C]};
                                           false -> {W, S + 1, C}
                                       end
                               end, {0, 0, []}, Ws),
                {D, K, C2} = lists:foldl(
                               fun({Id, Before, Cond, Dg, Seen}, {D, K, C}) ->
                                       case mnesia:read(Tab, Id, write) of
                                           %% Nothing to delete here; but with
                                           %% evidence the deletion is still
                                           %% written, so that a replica that
                                           %% holds the row (replica repair)
                                           %% drops it too.
                                           [] when Cond =/= 1 -> {D, K, C};
                                           Cur ->
                                               case delete_applies(Cond, Dg, Id, Before, Cur) andalso
                                                    not (Cond =:= 1 andalso winner_changed(Rec, Id, Seen)) of
                                                   true -> mnesia:delete(Tab, Id, write), {D + 1, K, C};
                                                   false when Cond =:= 1 -> {D, K, [Id | C]};
                                                   false -> {D, K + 1, C}
                                               end
                                       end
                               end, {0, 0, C1}, Ds),
                {W, S, D, K, C2}
            end,
        case mnesia:transaction(F) of
            {atomic, {W, S, D, K, C}} ->
                {ok, W, S, D, K, length(C),
                 iolist_to_binary([[<<(byte_size(Id)):32>>, Id] || Id <- lists:reverse(C)])};
            {aborted, R} -> fail(iolist_to_binary(io_lib:format("mnesia aborted: ~0P", [R, 12])))
        end
    end).

write_applies(1, Dg, Id, _New, Cur) -> digest(Id, Cur) =:= Dg;
write_applies(_, _, _, New, [{_, _, Old, _}]) when is_map(Old) -> la(New) > la(Old);
write_applies(_, _, _, _, _) -> true.

delete_applies(1, Dg, Id, _Before, Cur) -> digest(Id, Cur) =:= Dg;
delete_applies(_, _, _, Before, [{_, _, _, Wt}]) -> wtime(Wt) < Before;
delete_applies(_, _, _, _, _) -> false.

%% recorded(Tab, Ids) -> #{Id => Micros}: this node's recorder's last
%% change of each of Ids (µs, as changes/2 reports them).
recorded(_, []) -> #{};
recorded(Tab, Ids) ->
    maps:from_list([{Id, Us} || {Id, _Op, Us, _O, _D} <- lookup_us(Tab, Ids)]).

%% lookup_us(Tab, Ids): the recorder's changes with their times in µs; a
%% recorder older than its lookup_us/2 keeps ms, taken as Millis * 1000.
lookup_us(Tab, Ids) ->
    case erlang:function_exported(migctl_recorder, lookup_us, 2) of
        true -> migctl_recorder:lookup_us(Tab, Ids);
        false -> [{K, Op, Ms * 1000, O, D} || {K, Op, Ms, O, D} <- migctl_recorder:lookup(Tab, Ids)]
    end.

%% tm_barrier(): wait until this node's Mnesia transaction manager has
%% handled every message ahead of ours. A transaction coordinated on
%% another node returns to its client, and releases its locks, right after
%% sending the commit to this node's transaction manager (sym_trans: an
%% abcast, no wait; OTP's mnesia_tm:multi_commit/5), so it can be
%% acknowledged, and its locks granted to us, before it is applied here.
%% Its commit message came first on the same connection: one system call to
%% mnesia_tm, answered in order (doit_loop), makes sure it is applied here
%% and reported to this node's recorder.
tm_barrier() ->
    case whereis(mnesia_tm) of
        undefined -> ok;
        _ -> _ = (catch sys:statistics(mnesia_tm, get, 5000)), ok
    end.

recorder_running() ->
    code:is_loaded(migctl_recorder) =/= false andalso is_pid(whereis(migctl_recorder)).

%% A change of Id recorded after Seen: the winner changed the key after the
%% decision was made. Seen -1: no record was read, nothing to compare.
winner_changed(_, _, Seen) when Seen < 0 -> false;
winner_changed(Rec, Id, Seen) ->
    case maps:find(Id, Rec) of
        {ok, Us} -> Us > Seen;
        error -> false
    end.

%% The record digest of a row, phash2({Id, Session, WriteTime}), as
%% migctl_buckets reports it for {mnesia, Tab} (keys/3, of_ids/3) and the
%% recorder records it for a write; 0 for no row (-1 for more than one,
%% which matches no digest).
digest(_, []) -> 0;
digest(Id, [{_, _, S, W}]) -> erlang:phash2({Id, S, W}, ?SPACE);
digest(_, _) -> -1.

la(S) ->
    case maps:get(last_accessed, S, 0) of
        V when is_integer(V) -> V;
        _ -> 0
    end.

rows(<<>>, Acc) -> lists:reverse(Acc);
rows(<<L:32, Id:L/binary, BL:32, B:BL/binary, Cond:8, Dg:32, Seen:64/signed, Rest/binary>>, Acc) ->
    S = binary_to_term(B),
    is_map(S) orelse fail(not_a_session),
    rows(Rest, [{Id, S, Cond, Dg, Seen} | Acc]);
rows(_, _) -> fail(bad_frame).

dels(<<>>, Acc) -> lists:reverse(Acc);
dels(<<L:32, Id:L/binary, Before:64/signed, Cond:8, Dg:32, Seen:64/signed, Rest/binary>>, Acc) ->
    dels(Rest, [{Id, Before, Cond, Dg, Seen} | Acc]);
dels(_, _) -> fail(bad_frame).

%% ------------------------------------------------------- add / remove node

%% join(Seeds, Tabs, Timeout) -> {ok, Steps}: run on the joining node. Starts
%% Mnesia (a node without a disc schema starts with a RAM one), joins the
%% cluster through Seeds, makes the schema and Tabs disc_copies here and
%% waits until they are loaded. Steps already done are skipped, so a join
%% can be run again after a failure.
join(Seeds, Tabs, Timeout) ->
    safe(fun() ->
        case mnesia:system_info(is_running) of
            yes -> ok;
            _ -> ok = start_mnesia()
        end,
        S1 = case lists:any(fun(N) -> lists:member(N, mnesia:system_info(running_db_nodes)) end, Seeds) of
                 true -> [{extra_db_nodes, already}];
                 false ->
                     case mnesia:change_config(extra_db_nodes, Seeds) of
                         {ok, []} -> fail(seeds_unreachable);
                         {ok, Ns} -> [{extra_db_nodes, Ns}];
                         {error, E} -> fail(iolist_to_binary(io_lib:format("extra_db_nodes: ~0P", [E, 10])))
                     end
             end,
        S2 = case mnesia:table_info(schema, storage_type) of
                 disc_copies -> [{schema, already}];
                 _ -> atomic(mnesia:change_table_copy_type(schema, node(), disc_copies), schema)
             end,
        S3 = [case lists:member(node(), mnesia:table_info(T, disc_copies)) of
                  true -> {T, already};
                  false ->
                      case mnesia:table_info(T, storage_type) of
                          ram_copies -> hd(atomic(mnesia:change_table_copy_type(T, node(), disc_copies), T));
                          _ -> hd(atomic(mnesia:add_table_copy(T, node(), disc_copies), T))
                      end
              end || T <- Tabs],
        case mnesia:wait_for_tables(Tabs, Timeout) of
            ok -> ok;
            Other -> fail(iolist_to_binary(io_lib:format("wait_for_tables: ~0P", [Other, 10])))
        end,
        %% A node that rejoins with an empty directory can come back with
        %% master nodes set for tables it loaded from the cluster; they would
        %% make its next restart ignore its own copy.
        S4 = case [T || T <- mnesia:system_info(tables), mnesia:table_info(T, master_nodes) =/= []] of
                 [] -> [];
                 Ms -> ok = mnesia:set_master_nodes([]), [{master_nodes_cleared, Ms}]
             end,
        {ok, S1 ++ S2 ++ S3 ++ S4}
    end).

atomic({atomic, ok}, What) -> [{What, done}];
atomic({aborted, {already_exists, _, _}}, What) -> [{What, already}];
atomic({aborted, R}, What) ->
    fail(iolist_to_binary(io_lib:format("~p: ~0P", [What, R, 10]))).

%% del_copies(Node, Tabs) -> {ok, Steps}: run on a node that stays, while
%% Node still runs Mnesia (Mnesia refuses to drop a disc copy on a node it
%% cannot reach): drops Node's copies of Tabs.
del_copies(Node, Tabs) ->
    safe(fun() ->
        {ok, [case lists:member(Node, mnesia:table_info(T, all_nodes)) of
                  true -> hd(atomic(mnesia:del_table_copy(T, Node), T));
                  false -> {T, already}
              end || T <- Tabs]}
    end).

%% del_schema(Node) -> {ok, Steps}: run on a node that stays, once Node has
%% Mnesia stopped: drops its schema copy, which removes it from db_nodes.
del_schema(Node) ->
    safe(fun() ->
        lists:member(Node, mnesia:system_info(running_db_nodes)) andalso fail(node_still_running_mnesia),
        case lists:member(Node, mnesia:system_info(db_nodes)) of
            true -> {ok, atomic(mnesia:del_table_copy(schema, Node), schema)};
            false -> {ok, [{schema, already}]}
        end
    end).

%% ------------------------------------------------------------- forwarder

%% forwarder(To, Tag) -> {ok, Pid}: a process on this node that sends To
%% every Mnesia system event and node up/down as
%%   {Tag, node(), Kind :: atom(), Peer :: atom(), Text :: binary()}
%% (Peer is none when the event names no node). It monitors To and exits
%% when To goes away, so nothing outlives the migctl that started it; when
%% Mnesia stops (which drops the subscription) it resubscribes as soon as
%% Mnesia is back and says so (Kind subscribed).
forwarder(To, Tag) ->
    safe(fun() ->
        Parent = self(),
        Ref = make_ref(),
        Pid = spawn(fun() -> fwd_init(Parent, Ref, To, Tag) end),
        receive {Ref, ready} -> {ok, Pid}
        after 5000 -> exit(Pid, kill), fail(forwarder_timeout)
        end
    end).

%% forwarder_stop(Pid) -> {ok, stopped}: stops the forwarder and waits for it
%% to be gone, so that no process runs this module's code when migctl
%% unloads it right after (a purge would otherwise have to kill it).
forwarder_stop(Pid) ->
    safe(fun() ->
        M = erlang:monitor(process, Pid),
        Pid ! {migctl_stop, self()},
        receive {'DOWN', M, process, _, _} -> {ok, stopped}
        after 2000 -> erlang:demonitor(M, [flush]), exit(Pid, kill), {ok, stopped}
        end
    end).

fwd_init(Parent, Ref, To, Tag) ->
    process_flag(trap_exit, true),
    M = erlang:monitor(process, To),
    ok = net_kernel:monitor_nodes(true, [{node_type, visible}]),
    St = #{to => To, tag => Tag, mon => M, sub => none},
    St1 = subscribe(St),
    Parent ! {Ref, ready},
    fwd_loop(St1).

subscribe(St = #{sub := none}) ->
    case catch mnesia:subscribe(system) of
        {ok, _} ->
            Sub = whereis(mnesia_subscr),
            SRef = erlang:monitor(process, Sub),
            send(St, subscribed, none, <<>>),
            St#{sub := SRef};
        _ ->
            erlang:send_after(200, self(), resubscribe),
            St
    end;
subscribe(St) -> St.

fwd_loop(St = #{mon := M, sub := Sub}) ->
    receive
        {'DOWN', M, process, _, _} -> exit(normal);
        {migctl_stop, _} -> exit(normal);
        {'DOWN', Sub, process, _, _} ->
            send(St, unsubscribed, none, <<"mnesia stopped; resubscribing when it is back">>),
            erlang:send_after(200, self(), resubscribe),
            fwd_loop(St#{sub := none});
        resubscribe -> fwd_loop(subscribe(St));
        {mnesia_system_event, E} ->
            {Kind, Peer} = classify(E),
            Kind =:= mnesia_down andalso
                persistent_term:put({?MODULE, mnesia_down, Peer}, erlang:system_time(millisecond)),
            send(St, Kind, Peer, text(E)),
            fwd_loop(St);
        {nodeup, N, _} -> send(St, nodeup, N, <<>>), fwd_loop(St);
        {nodedown, N, _} -> send(St, nodedown, N, <<>>), fwd_loop(St);
        {'EXIT', _, _} -> fwd_loop(St);
        _ -> fwd_loop(St)
    end.

send(#{to := To, tag := Tag}, Kind, Peer, Text) ->
    To ! {Tag, node(), Kind, Peer, Text}.

classify({inconsistent_database, Ctx, N}) when is_atom(Ctx), is_atom(N) -> {inconsistent_database, N};
classify({mnesia_down, N}) when is_atom(N) -> {mnesia_down, N};
classify({mnesia_up, N}) when is_atom(N) -> {mnesia_up, N};
classify({mnesia_overload, _}) -> {mnesia_overload, none};
classify({mnesia_fatal, _, _, _}) -> {mnesia_fatal, none};
classify({mnesia_error, _, _}) -> {mnesia_error, none};
classify({mnesia_checkpoint_activated, _}) -> {checkpoint, none};
classify({mnesia_checkpoint_deactivated, _}) -> {checkpoint, none};
classify(T) when is_tuple(T), is_atom(element(1, T)) -> {element(1, T), none};
classify(_) -> {other, none}.

%% Events are formatted here, bounded, so no user term crosses the wire.
text(E) -> iolist_to_binary(io_lib:format("~0P", [E, 12])).
