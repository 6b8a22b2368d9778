%% @doc The change recorder: on every node, the last change of every key of
%% the session tables, as this node's Mnesia applied it.
%%
%% Why: after a split brain, Mnesia keeps no deletion times, and a row's own
%% times say when a client last wrote it, not whether the other side deleted
%% it. A heal that infers deletions from those times either loses writes or
%% brings deleted sessions back. With this record, `migctl cluster heal'
%% decides from evidence: a key present on one side only was deleted on the
%% other exactly when the other side recorded deleting it after its last
%% write, and conflicting changes are ordered by when they were applied.
%%
%% How: a process subscribed to Mnesia's simple table events of each
%% recorded table ({table, Tab, simple}). Mnesia reports every commit to the
%% local replica, whichever node it came from, transactions and dirty
%% operations alike, so the record of a node covers its whole island. For
%% each key it keeps one row in the named, protected ETS table
%% `migctl_recorder':
%%
%%     {{Tab, Key}, write | delete, Millis, Origin, Digest, Micros}
%%
%% Micros is this node's erlang:system_time(microsecond) when the event was
%% handled, Millis the same time in milliseconds (the time index and the
%% window are in ms). The process runs at high priority, so that is within
%% a fraction of a millisecond of the commit on a node that is not
%% overloaded; two changes closer together than that, on two sides of a
%% split, are concurrent and ordered by these times. They are kept to the
%% microsecond because changes on two sides a fraction of a millisecond
%% apart are common under traffic, and a millisecond would make them equal
%% (rows written by an earlier version hold no Micros: lookup_us/2 answers
%% Millis * 1000 for them). Origin is the node of the process that made the change (from the
%% event's activity id); Digest is, for a write, erlang:phash2 of the record
%% without its tag, {Key, Value..., } in 2^32 (for erlmcp's records
%% phash2({Id, Session, WriteTime}, 2^32), the digest migctl compares
%% replicas with), so that a copy that no longer holds what this node last
%% wrote can be told from one that does; 0 for a delete. Readers
%% (lookup/2) read the table directly.
%%
%% Coverage: a key without a row had no change since the table's coverage
%% start (info/0: `since'), which is when the subscription began (it is lost
%% when Mnesia stops here and taken again within 100 ms of Mnesia being back,
%% or at once when told with `migctl_recorder ! resubscribe', as migctl
%% does after reloading a node: coverage then starts again), or the prune
%% horizon if that is later. Mnesia also drops a table's subscribers on a
%% node, silently, when the node's copy is deleted (del_table_copy, as
%% `migctl cluster remove-node' or a backfill that re-adds copies does), and
%% does not restore them when the copy is added back: the recorder would
%% then record nothing while still claiming coverage. So it checks that it
%% is still in mnesia:table_info(Tab, subscribers) every second, before
%% every info/0 answer, and on `resubscribe' (which migctl sends after
%% changing a node's copies); a table found dropped loses its coverage
%% (since undefined, counted in info/0's `dropped') and is subscribed again
%% as soon as the node has a local copy (mnesia:subscribe/1 fails with
%% not_active_local until then). Coverage then starts at the new
%% subscription, which is exact: the node applied no change of the table
%% while it had no copy. Rows older than
%% `recorder_window_ms' are pruned every 10 s; past `recorder_max_keys' rows
%% the horizon moves forward until the table fits. Memory is therefore
%% bounded by the window and the key cap (about 300 bytes a key, with the time index, for erlmcp's
%% 32-character ids).
%%
%% A clear_table (Mnesia reports it as {delete, {schema, Tab}, _}) is
%% recorded as the table's `cleared' time in info/0: a deletion of every key
%% not written since.
-module(migctl_recorder).
-behaviour(gen_server).

-export([start_link/0, start_link/1, info/0, lookup/2, lookup_us/2, changed_since/2, stop/0]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2]).

-define(TAB, ?MODULE).
%% The time index: {{Millis, Tab, Key}} for every row of ?TAB, in time
%% order (ordered_set), so that changed_since/2 and the prune read only
%% the rows after (before) a time instead of scanning every key: the
%% monitor's incremental cycle then costs O(changes) with a million keys
%% recorded. put/5 keeps it in step with ?TAB (one entry per key).
-define(TIME, migctl_recorder_time).
-define(PRUNE_MS, 10000).
-define(RETRY_MS, 100).
%% How often the recorder checks that Mnesia still has it as a subscriber
%% of every table it believes covered (see Coverage at the top): one ETS
%% lookup in Mnesia's global variables per table, so a second's period
%% costs nothing and bounds how long coverage stays off after a copy
%% comes back unannounced.
-define(CHECK_MS, 1000).

-type op() :: write | delete.
%% Time: Millis from lookup/2, Micros from lookup_us/2.
-type change() :: {Key :: term(), op(), Time :: integer(), Origin :: node(), Digest :: non_neg_integer()}.
-export_type([op/0, change/0]).

%%% API

-spec start_link() -> {ok, pid()} | ignore | {error, term()}.
start_link() ->
    start_link(#{}).

%% @doc Opts override the application env: tables, window_ms, max_keys.
-spec start_link(map()) -> {ok, pid()} | ignore | {error, term()}.
start_link(Opts) when is_map(Opts) ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, Opts, []).

-spec stop() -> ok.
stop() -> gen_server:stop(?MODULE).

%% @doc What the recorder covers, for migctl: whether it runs, per table
%% whether it is subscribed and since when (ms; undefined while it is not),
%% the prune horizon, the key count and memory, and its counters (dropped:
%% how many times a subscription was found dropped by Mnesia, see Coverage).
-spec info() -> map().
info() ->
    case whereis(?MODULE) of
        undefined -> #{running => false};
        _ -> gen_server:call(?MODULE, info, 5000)
    end.

%% @doc The last recorded change of each of Keys in Tab; keys without one
%% are left out. The recorder first handles every event already sent to it
%% (Mnesia reports a commit before the transaction returns to its caller,
%% so every change acknowledged on this node before the call is in the
%% answer); the table is then read in the caller.
-spec lookup(atom(), [term()]) -> [change()].
lookup(Tab, Keys) ->
    lookup(Tab, Keys, fun(R) -> element(3, R) end).

%% @doc As lookup/2, with each change's time in microseconds (this node's
%% erlang:system_time(microsecond) when the recorder handled it), which is
%% what orders changes made on two sides of a split.
-spec lookup_us(atom(), [term()]) -> [change()].
lookup_us(Tab, Keys) ->
    lookup(Tab, Keys, fun micros/1).

micros({_, _, _, _, _, Us}) -> Us;
micros({_, _, Ms, _, _}) -> Ms * 1000.

lookup(Tab, Keys, Time) ->
    case whereis(?MODULE) of
        undefined -> [];
        _ ->
            ok = gen_server:call(?MODULE, sync, 15000),
            [{K, element(2, R), Time(R), element(4, R), element(5, R)}
             || K <- Keys, R <- ets:lookup(?TAB, {Tab, K})]
    end.

%% @doc The keys of Tab whose last recorded change is at or after Millis
%% (after the recorder has handled every event already sent to it), so
%% that a reader who saw the table at Millis can catch up on what changed.
-spec changed_since(atom(), integer()) -> [term()].
changed_since(Tab, Millis) ->
    case whereis(?MODULE) of
        undefined -> [];
        _ ->
            ok = gen_server:call(?MODULE, sync, 15000),
            %% {Millis - 1, [], []} sorts after every {Millis - 1, Tab, _}
            %% (an atom sorts before a list) and before every {Millis, _, _}.
            since_walk(Tab, ets:next(?TIME, {Millis - 1, [], []}), [])
    end.

%%% gen_server

init(Opts) ->
    process_flag(trap_exit, true),
    %% The time of a change is when this process handles its event: run
    %% ahead of ordinary processes so that a busy node does not delay it
    %% (the work per event is one ETS insert), and keep a backlog off the
    %% heap.
    process_flag(priority, high),
    process_flag(message_queue_data, off_heap),
    Tabs = opt(Opts, tables, recorder_tables, [erlmcp_session]),
    ?TAB = ets:new(?TAB, [named_table, protected, set, {read_concurrency, true}]),
    ?TIME = ets:new(?TIME, [named_table, protected, ordered_set]),
    St = #{tables => maps:from_list([{T, #{since => undefined, cleared => 0}} || T <- Tabs]),
           window => opt(Opts, window_ms, recorder_window_ms, 21600000),
           max_keys => opt(Opts, max_keys, recorder_max_keys, 1000000),
           horizon => 0,
           subscr => undefined,
           started => now_ms(),
           retry => false,
           writes => 0, deletes => 0, pruned => 0, subscriptions => 0, dropped => 0},
    erlang:send_after(?PRUNE_MS, self(), prune),
    erlang:send_after(?CHECK_MS, self(), check),
    {ok, subscribe(St)}.

handle_call(info, _From, St0) ->
    %% Check first: coverage a reader is told about must still be there
    %% now, not as of the last periodic check.
    St = check(St0),
    {reply, info_reply(St), St};
handle_call(sync, _From, St) ->
    {reply, ok, St};
handle_call(_, _From, St) ->
    {reply, {error, unknown_request}, St}.

handle_cast(_, St) ->
    {noreply, St}.

handle_info({mnesia_table_event, E}, St) ->
    {noreply, event(E, St)};
handle_info(resubscribe, St) ->
    %% Sent by migctl after it restarted Mnesia or changed this node's
    %% copies: what Mnesia dropped meanwhile is lost coverage, then take
    %% every missing subscription again.
    {noreply, subscribe(check(St))};
handle_info(retry, St) ->
    {noreply, subscribe(St#{retry := false})};
handle_info(check, St) ->
    erlang:send_after(?CHECK_MS, self(), check),
    {noreply, check(St)};
handle_info({'DOWN', Ref, process, _, _}, St = #{subscr := Ref, tables := Ts}) ->
    %% Mnesia stopped here: every subscription is gone, and so is the
    %% coverage until it is back.
    Ts1 = maps:map(fun(_, V) -> V#{since := undefined} end, Ts),
    {noreply, retry_later(St#{subscr := undefined, tables := Ts1})};
handle_info(prune, St) ->
    erlang:send_after(?PRUNE_MS, self(), prune),
    {noreply, prune(St)};
handle_info(_, St) ->
    {noreply, St}.

terminate(_, _) -> ok.

%%% internal

opt(Opts, K, EnvK, Default) ->
    maps:get(K, Opts, application:get_env(migctl_node, EnvK, Default)).

now_ms() -> erlang:system_time(millisecond).

%% info/0's answer.
info_reply(St = #{tables := Ts, horizon := H}) ->
    Tables = [#{table => T, subscribed => S =/= undefined,
                since => case S of undefined -> undefined; _ -> max(S, H) end,
                cleared => C}
              || {T, #{since := S, cleared := C}} <- maps:to_list(Ts)],
    #{running => true, tables => Tables, horizon => H,
      keys => ets:info(?TAB, size),
      memory_bytes => (ets:info(?TAB, memory) + ets:info(?TIME, memory)) * erlang:system_info(wordsize),
      window_ms => maps:get(window, St), max_keys => maps:get(max_keys, St),
      started => maps:get(started, St),
      writes => maps:get(writes, St), deletes => maps:get(deletes, St),
      pruned => maps:get(pruned, St), subscriptions => maps:get(subscriptions, St),
      dropped => maps:get(dropped, St)}.

%% Subscribe to every table not yet subscribed, as far as Mnesia lets us now
%% (not running, a table not there yet, or no local copy of it: Mnesia then
%% answers {error, {not_active_local, Tab}}; try again shortly).
subscribe(St = #{tables := Ts}) ->
    Running = (catch mnesia:system_info(is_running)) =:= yes,
    St1 = case {Running, maps:get(subscr, St)} of
              {true, undefined} ->
                  case whereis(mnesia_subscr) of
                      undefined -> St;
                      P -> St#{subscr := erlang:monitor(process, P)}
                  end;
              _ -> St
          end,
    Ts1 = maps:map(
            fun(T, V = #{since := undefined}) when Running ->
                    case catch mnesia:subscribe({table, T, simple}) of
                        {ok, _} -> V#{since := now_ms()};
                        {error, {already_exists, _}} -> V#{since := now_ms()};
                        _ -> V
                    end;
               (_, V) -> V
            end, Ts),
    Pending = [T || {T, #{since := undefined}} <- maps:to_list(Ts1)],
    Taken = length([T || {T, #{since := undefined}} <- maps:to_list(Ts)]) - length(Pending),
    St2 = St1#{tables := Ts1, subscriptions := maps:get(subscriptions, St1) + Taken},
    case Pending of
        [] -> St2;
        _ -> retry_later(St2)
    end.

%% One retry timer at a time: resubscribe messages and periodic checks
%% while a table has no local copy (possibly for good, on a node that
%% holds no replica of it) must not each start a chain of their own.
retry_later(St = #{retry := true}) -> St;
retry_later(St) ->
    erlang:send_after(?RETRY_MS, self(), retry),
    St#{retry := true}.

%% Tables believed covered whose subscription Mnesia no longer has: it
%% drops a node's table subscribers without a word when the node's copy
%% is deleted (mnesia:del_table_copy/2, delete_table), and adding the copy
%% back does not restore them. Their coverage is lost (since :=
%% undefined) and they are subscribed again (at once if the copy is back,
%% else every ?RETRY_MS until it is). On a node without a local copy,
%% table_info(T, subscribers) is [] (Mnesia 4.21.3), and it exits when the
%% table or Mnesia is gone: both are "not subscribed".
check(St = #{tables := Ts}) ->
    Me = self(),
    Lost = [T || {T, #{since := S}} <- maps:to_list(Ts), S =/= undefined, not subscribed(T, Me)],
    case Lost of
        [] -> St;
        _ ->
            Ts1 = lists:foldl(fun(T, A) -> maps:update_with(T, fun(V) -> V#{since := undefined} end, A) end,
                              Ts, Lost),
            subscribe(St#{tables := Ts1, dropped := maps:get(dropped, St) + length(Lost)})
    end.

subscribed(T, Me) ->
    case catch mnesia:table_info(T, subscribers) of
        L when is_list(L) -> lists:member(Me, L);
        _ -> false
    end.

event({write, Rec, Act}, St) when is_tuple(Rec), tuple_size(Rec) >= 2 ->
    [Tab | Fields] = tuple_to_list(Rec),
    put(Tab, element(2, Rec), {write, erlang:phash2(list_to_tuple(Fields), 4294967296)}, Act, St);
event({delete_object, Rec, Act}, St) when is_tuple(Rec), tuple_size(Rec) >= 2 ->
    put(element(1, Rec), element(2, Rec), {delete, 0}, Act, St);
event({delete, {schema, Tab}, _Act}, St = #{tables := Ts}) ->
    %% clear_table (and delete_table) of a recorded table.
    cleared(Tab, Ts, St);
event({delete, {Tab, '_'}, _Act}, St = #{tables := Ts}) ->
    cleared(Tab, Ts, St);
event({delete, {Tab, Key}, Act}, St) ->
    put(Tab, Key, {delete, 0}, Act, St);
event(_, St) ->
    St.

%% Only the recorded tables' rows: Mnesia also reports schema changes
%% (a clear_table writes the table's definition) to table subscribers.
put(Tab, Key, {Op, Digest}, Act, St = #{tables := Ts}) when is_map_key(Tab, Ts) ->
    Us = erlang:system_time(microsecond),
    Now = Us div 1000,
    case ets:lookup(?TAB, {Tab, Key}) of
        [Old] -> ets:delete(?TIME, {element(3, Old), Tab, Key});
        [] -> ok
    end,
    ets:insert(?TAB, {{Tab, Key}, Op, Now, origin(Act), Digest, Us}),
    ets:insert(?TIME, {{Now, Tab, Key}}),
    case Op of
        write -> St#{writes := maps:get(writes, St) + 1};
        delete -> St#{deletes := maps:get(deletes, St) + 1}
    end;
put(_, _, _, _, St) ->
    St.

cleared(Tab, Ts, St) ->
    case maps:find(Tab, Ts) of
        {ok, V} -> St#{tables := Ts#{Tab := V#{cleared := now_ms()}}};
        error -> St
    end.

origin({tid, _, P}) when is_pid(P) -> node(P);
origin({dirty, P}) when is_pid(P) -> node(P);
origin(_) -> node().

%% Drop rows older than the window, then, while over the key cap, move the
%% horizon forward (halving the remaining age each time).
prune(St = #{window := W, max_keys := Max, horizon := H0}) ->
    Now = now_ms(),
    Cut = max(H0, Now - W),
    N = drop_before(Cut),
    shrink(Now, Cut, Max, St#{horizon := Cut, pruned := maps:get(pruned, St) + N}).

shrink(Now, Cut, Max, St) ->
    case ets:info(?TAB, size) > Max andalso Now - Cut > 1 of
        true ->
            Cut1 = Cut + (Now - Cut) div 2,
            N = drop_before(Cut1),
            shrink(Now, Cut1, Max, St#{horizon := Cut1, pruned := maps:get(pruned, St) + N});
        false -> St
    end.

%% Oldest first through the time index: the cost is the rows dropped.
drop_before(Cut) -> drop_before(Cut, ets:first(?TIME), 0).

drop_before(Cut, {Ms, Tab, Key} = K, N) when Ms < Cut ->
    Next = ets:next(?TIME, K),
    ets:delete(?TIME, K),
    ets:delete(?TAB, {Tab, Key}),
    drop_before(Cut, Next, N + 1);
drop_before(_, _, N) -> N.

%% The keys of Tab from index entry K on (the table is read by the caller
%% while the recorder writes: ets:next/2 on an ordered_set is defined for a
%% key that is gone, and an entry moved meanwhile has a time after the
%% caller's cycle began, so the next cycle sees it).
since_walk(_, '$end_of_table', Acc) -> Acc;
since_walk(Tab, {_, Tab, Key} = K, Acc) -> since_walk(Tab, ets:next(?TIME, K), [Key | Acc]);
since_walk(Tab, K, Acc) -> since_walk(Tab, ets:next(?TIME, K), Acc).
