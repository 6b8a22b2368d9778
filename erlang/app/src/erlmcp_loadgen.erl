%% @doc A small load generator that drives erlmcp_session_store and records
%% every acknowledged operation, so a migration can later be checked for
%% lost, wrong or resurrected sessions.
%%
%% start(#{rate => OpsPerSec, mix => #{store => 40, fetch => 40, delete => 20},
%%         keyspace => N, name => Atom}) starts a coordinator (not linked to
%% the caller) that every 10 ms hands out the operations due by then, so the
%% rate holds on average. Each operation picks an id from the keyspace:
%% `<<"lg-", Node, "-", Name, "-", K>>' (option `prefix' replaces everything
%% before K; give several nodes the same prefix only to make them collide on
%% purpose, their records will then disagree). Ids are split among `workers'
%% (default 8) processes, each doing its ids' operations one after the other,
%% so for every id the record is in the order the store saw. A worker holds
%% at most `max_pending' (default 16) queued operations; when the store is
%% slower than the rate, further operations are not issued but counted as
%% `skipped' (so queueing never pushes calls into their 5 s timeout), and
%% `rate' in the stats is what was achieved.
%%
%% The record is a public ETS table `<Name>_acked' owned by the coordinator,
%% one row per id: `{Id, {stored, Session minus last_accessed}}' after a
%% store returned ok, `{Id, deleted}' after a delete returned ok, and
%% `{Id, uncertain}' after a store or delete failed or timed out (it may or
%% may not have happened; a later acknowledged store or delete settles it).
%% The record lives as long as the coordinator: it is lost if the node stops.
%%
%% stop/1 stops issuing operations, drops queued ones, waits for those in
%% flight and returns the final stats; the coordinator and its record stay
%% until close/1, so acked/1 and verify/2 still work. Fetches also check what
%% they read against the record (read_lost: an acked session not found;
%% read_wrong: a different value; read_resurrected: an acked-deleted
%% session found); those are counted apart from `errors' but appear in
%% `last_errors'. Sessions live 24 h (option `session_timeout_ms') so none
%% expires during a test.
%%
%% == History (option history => true) ==
%%
%% The record above keeps one outcome per id; an independent checker needs
%% every operation with its place in time (migctl's Go package `history'
%% judges it with porcupine). With `history => true' each worker keeps, in
%% its own process (a list, no message or table write per operation), one
%% entry per operation it issued:
%%   {Worker, store | fetch | delete, Id, Digest, Call, Return, Outcome}
%% Worker is the worker's index (1..workers; 0 is the final read below),
%% Digest is erlang:phash2(Session minus last_accessed, 1 bsl 32) of the
%% value stored or read (0 for a delete or a miss), Call and Return are
%% erlang:monotonic_time(nanosecond) just before the call into the store
%% and just after it returned, Outcome is ok | not_found | error | timeout
%% (error and timeout: the store or delete may or may not have happened).
%% Monotonic times of different nodes are not comparable, so the history
%% carries the node's erlang:time_offset(nanosecond) and its time warp mode:
%% in the default no_time_warp mode the offset is fixed at boot and
%% Monotonic + Offset is the node's Erlang system time, which on one host
%% (the tests, the demo) is the same clock on every node. The raw monotonic
%% time is recorded (not erlang:system_time) so that a multi_time_warp node
%% is detectable instead of silently jumping.
%%
%% history(Name) returns the history as one binary,
%% term_to_binary({migctl_history, 1, Header, Ops}, [compressed]), Header a
%% map (node, name, shared, workers, time_offset_ns, time_warp_mode,
%% system_time_ns, os_system_time_ns) and Ops the entries worker by worker,
%% each worker's in the order it issued them. history(Name, #{final =>
%% Spec}) appends, as worker 0, one read per id of the history made
%% directly in the store Spec (as verify/2 reads): the final state the
%% checker judges the last operations against.
%%
%% Cost (go test ./history -run TestHistoryCost with MIGCTL_BENCH=1): one
%% node, the ETS backend, a rate it cannot reach so the achieved rate is its
%% capacity, 8 workers, 2 cores shared with other work, runs alternated:
%% median 11,070 ops/s with the history, 11,700 without (5 runs of 3 s
%% each; -5 %, within the runs' spread of 9,400..14,100), about 17 bytes per
%% operation in the compressed blob and some 120 bytes of worker heap. At
%% the tests' and the demo's rates (1,000..1,500 ops/s per cluster) it is
%% noise, so the demo leaves it on.
%%
%% == Shared sessions (option shared => true) ==
%%
%% Ids are `<<"lg-shared-", Name, "-", K>>' without the node, so load
%% generators of the same name and keyspace on several nodes work on the
%% same sessions, concurrently. Meaningful only where every node sees the
%% same store: Mnesia (phase3, or phase2 at 100 %); DETS and ETS are per
%% node and erlmcp pins a session to its node there, so leave it off with
%% them. Each node's own record cannot know what the other nodes did, so in
%% shared mode fetches do not check what they read against it and
%% verify/2 answers {error, shared_sessions}: the history is the evidence.
-module(erlmcp_loadgen).
-behaviour(gen_server).

-export([start/1, stop/1, close/1, stats/1, set_rate/2,
         acked/1, acked_binary/1, verify/2, history/1, history/2]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2]).

-define(TICK, 10).
-define(MAX_PENDING, 16).
-define(MAX_ERRORS, 100).
-define(MAX_SAMPLES, 20).
%% counter indexes
-define(C_OPS, 1).
-define(C_ERRORS, 2).
-define(C_STORES, 3).
-define(C_FETCHES, 4).
-define(C_DELETES, 5).
-define(C_SKIPPED, 6).
-define(C_READ_LOST, 7).
-define(C_READ_WRONG, 8).
-define(C_READ_RES, 9).
-define(C_UNCERTAIN, 10).
-define(NCOUNTERS, 10).

%%% API

-spec start(map()) -> {ok, pid()} | {error, term()}.
start(Opts) when is_map(Opts) ->
    Name = maps:get(name, Opts, erlmcp_loadgen),
    gen_server:start({local, Name}, ?MODULE, Opts#{name => Name}, []).

%% @doc Stops the load and returns the final stats; the record is kept.
stop(Name) -> gen_server:call(Name, stop, infinity).

%% @doc Ends the coordinator and drops its record.
close(Name) -> gen_server:stop(Name).

-spec stats(atom()) -> map().
stats(Name) -> gen_server:call(Name, stats).

set_rate(Name, Rate) when is_number(Rate), Rate >= 0 ->
    gen_server:call(Name, {set_rate, Rate}).

%% @doc Every acknowledged operation's outcome, one per id (uncertain ids
%% left out).
-spec acked(atom()) -> [{binary(), {stored, map()} | deleted}].
acked(Name) ->
    ets:select(table(Name), [{{'_', '$1'}, [{'=/=', '$1', uncertain}], ['$_']}]).

-spec acked_binary(atom()) -> binary().
acked_binary(Name) -> term_to_binary(acked(Name)).

%% @doc Checks every acknowledged operation against a store read directly
%% (no store server, last_accessed not touched). Values are compared without
%% last_accessed. Run it after stop/1: during load an operation can be in the
%% store before it is in the record.
-spec verify(atom(), {ets | dets | mnesia, atom()}) -> map() | {error, term()}.
verify(Name, Spec) ->
    case {is_shared(Name), reader(Spec)} of
        {true, _} ->
            {error, shared_sessions};
        {false, Read0} ->
            verify_with(Name, Read0)
    end.

verify_with(Name, Read0) ->
    case Read0 of
        {ok, Read} ->
            Init = #{checked => 0, lost => 0, wrong_value => 0, resurrected => 0,
                     uncertain => 0, read_errors => 0, samples => []},
            R = ets:foldl(fun(Row, Acc) -> check(Row, Read, Acc) end, Init, table(Name)),
            R#{samples := lists:reverse(maps:get(samples, R)),
               running => is_running(Name)};
        {error, _} = E ->
            E
    end.

%% @doc The recorded history (start option history => true), see the
%% module doc; {error, no_history} if it was not recorded.
-spec history(atom()) -> binary() | {error, term()}.
history(Name) -> history(Name, #{}).

%% @doc As history/1; #{final => Spec} appends a direct read of every id of
%% the history in the store Spec (worker 0).
-spec history(atom(), map()) -> binary() | {error, term()}.
history(Name, Opts) ->
    case gen_server:call(Name, history, infinity) of
        {ok, Header, Ops} ->
            case maps:get(final, Opts, none) of
                none ->
                    encode_history(Header, Ops);
                Spec ->
                    case reader(Spec) of
                        {ok, Read} -> encode_history(Header, Ops ++ final_reads(Ops, Read));
                        {error, _} = E -> E
                    end
            end;
        {error, _} = E ->
            E
    end.

encode_history(Header, Ops) ->
    term_to_binary({migctl_history, 1, Header, Ops}, [compressed]).

final_reads(Ops, Read) ->
    Ids = lists:usort([Id || {_, _, Id, _, _, _, _} <- Ops]),
    [final_read(Id, Read) || Id <- Ids].

final_read(Id, Read) ->
    T1 = erlang:monotonic_time(nanosecond),
    R = Read(Id),
    T2 = erlang:monotonic_time(nanosecond),
    case R of
        {ok, S} -> {0, fetch, Id, digest(S), T1, T2, ok};
        none -> {0, fetch, Id, 0, T1, T2, not_found};
        {error, _} -> {0, fetch, Id, 0, T1, T2, error}
    end.

%% The digest of a session: last_accessed is left out (a fetch updates it).
digest(S) -> erlang:phash2(strip(S), 1 bsl 32).

%%% verification

reader({ets, T}) ->
    case ets:whereis(T) of
        undefined -> {error, {no_ets_table, T}};
        _ -> {ok, fun(Id) -> case ets:lookup(T, Id) of
                                 [{_, S}] -> {ok, S};
                                 [] -> none
                             end end}
    end;
reader({dets, T}) ->
    case dets:info(T, filename) of
        undefined -> {error, {dets_not_open, T}};
        _ -> {ok, fun(Id) -> case dets:lookup(T, Id) of
                                 [{_, S}] -> {ok, S};
                                 [] -> none;
                                 {error, R} -> {error, R}
                             end end}
    end;
reader({mnesia, T}) ->
    {ok, fun(Id) -> try mnesia:dirty_read(T, Id) of
                        [{_, _, S, _}] -> {ok, S};
                        [] -> none
                    catch exit:R -> {error, R}
                    end end};
%% What the hybrid backend's phase2 fetch reads, without its side effects:
%% an id it routes (erlang:phash2(Id, 100) < Percent) from Mnesia, falling
%% back to DETS when Mnesia has none; any other id from DETS. This is the
%% store as the application sees it in phase2 (where the two can differ:
%% a dual write that failed on Mnesia after DETS took it, answered as an
%% error).
reader({hybrid, Percent, DetsT, MnesiaT}) ->
    case {reader({dets, DetsT}), reader({mnesia, MnesiaT})} of
        {{ok, D}, {ok, M}} ->
            {ok, fun(Id) ->
                         case erlang:phash2(Id, 100) < Percent of
                             true -> case M(Id) of
                                         none -> D(Id);
                                         R -> R
                                     end;
                             false -> D(Id)
                         end
                 end};
        {{error, _} = E, _} -> E;
        {_, E} -> E
    end;
reader(Other) ->
    {error, {bad_store_spec, Other}}.

check({_Id, uncertain}, _Read, Acc) ->
    bump(uncertain, Acc);
check({Id, Expected}, Read, Acc0) ->
    Acc = bump(checked, Acc0),
    case {Expected, Read(Id)} of
        {{stored, E}, {ok, S}} ->
            case strip(S) of
                E -> Acc;
                Got -> sample(wrong_value, #{id => Id, expected => E, actual => Got}, Acc)
            end;
        {{stored, E}, none} -> sample(lost, #{id => Id, expected => E}, Acc);
        {deleted, {ok, S}} -> sample(resurrected, #{id => Id, actual => S}, Acc);
        {deleted, none} -> Acc;
        {_, {error, R}} -> sample(read_errors, #{id => Id, reason => R}, Acc)
    end.

sample(Kind, Info, Acc = #{samples := Samples}) ->
    Acc1 = bump(Kind, Acc),
    case length(Samples) < ?MAX_SAMPLES of
        true -> Acc1#{samples := [Info#{kind => Kind} | Samples]};
        false -> Acc1
    end.

bump(K, M) -> maps:update_with(K, fun(V) -> V + 1 end, M).

strip(S) when is_map(S) -> maps:remove(last_accessed, S);
strip(S) -> S.

table(Name) -> list_to_atom(atom_to_list(Name) ++ "_acked").

is_shared(Name) ->
    try gen_server:call(Name, shared) catch exit:_ -> false end.

is_running(Name) ->
    try gen_server:call(Name, running) catch exit:_ -> false end.

%%% coordinator

init(Opts = #{name := Name}) ->
    process_flag(trap_exit, true),
    Rate = maps:get(rate, Opts, 1000),
    Keyspace = maps:get(keyspace, Opts, 10000),
    NWorkers = maps:get(workers, Opts, 8),
    Mix = mix(maps:get(mix, Opts, #{store => 40, fetch => 40, delete => 20})),
    Shared = maps:get(shared, Opts, false) =:= true,
    History = maps:get(history, Opts, false) =:= true,
    Prefix = maps:get(prefix, Opts,
                      case Shared of
                          true -> iolist_to_binary(["lg-shared-", atom_to_list(Name), "-"]);
                          false -> iolist_to_binary(["lg-", atom_to_list(node()), "-",
                                                     atom_to_list(Name), "-"])
                      end),
    Tab = ets:new(table(Name), [set, public, named_table, {write_concurrency, true}]),
    Counters = counters:new(?NCOUNTERS, [write_concurrency]),
    %% one pending counter per worker, then the "stopping" flag
    Pending = atomics:new(NWorkers + 1, []),
    Ctx = #{table => Tab, counters => Counters, pending => Pending,
            maxlat => atomics:new(1, []),
            stop_ix => NWorkers + 1, coordinator => self(),
            timeout_ms => maps:get(session_timeout_ms, Opts, 86400000),
            origin => atom_to_binary(node()), name => atom_to_binary(Name),
            shared => Shared, history => History},
    Workers = list_to_tuple([spawn_link(fun() -> worker(Ix, Ctx, []) end)
                             || Ix <- lists:seq(1, NWorkers)]),
    erlang:send_after(?TICK, self(), tick),
    Now = erlang:monotonic_time(millisecond),
    {ok, Ctx#{rate => Rate, keyspace => Keyspace, mix => Mix, prefix => Prefix,
              max_pending => maps:get(max_pending, Opts, ?MAX_PENDING),
              workers => Workers, running => true, since => Now, issued => 0,
              started => Now, stopped => undefined, errors => queue:new(),
              nerrors => 0, seq => 0}}.

handle_call(stop, _From, S = #{running := false}) ->
    {reply, stats_of(S), S};
handle_call(stop, _From, S = #{workers := Workers, pending := P, stop_ix := Ix}) ->
    atomics:put(P, Ix, 1),
    Ref = make_ref(),
    [W ! {sync, self(), Ref} || W <- tuple_to_list(Workers)],
    [receive {Ref, done} -> ok end || _ <- tuple_to_list(Workers)],
    S1 = drain_errors(S#{running := false,
                         stopped := erlang:monotonic_time(millisecond)}),
    {reply, stats_of(S1), S1};
handle_call(stats, _From, S) ->
    S1 = drain_errors(S),
    {reply, stats_of(S1), S1};
handle_call(running, _From, S = #{running := R}) ->
    {reply, R, S};
handle_call(shared, _From, S = #{shared := Sh}) ->
    {reply, Sh, S};
handle_call(history, _From, S = #{history := false}) ->
    {reply, {error, no_history}, S};
handle_call(history, _From, S = #{workers := Workers, shared := Sh, name := Name}) ->
    Ref = make_ref(),
    [W ! {history, self(), Ref} || W <- tuple_to_list(Workers)],
    Ops = lists:append([receive {Ref, Ix, H} -> H end
                        || Ix <- lists:seq(1, tuple_size(Workers))]),
    Header = #{node => node(), name => Name, shared => Sh,
               workers => tuple_size(Workers),
               time_offset_ns => erlang:time_offset(nanosecond),
               time_warp_mode => erlang:system_info(time_warp_mode),
               system_time_ns => erlang:system_time(nanosecond),
               os_system_time_ns => os:system_time(nanosecond)},
    {reply, {ok, Header, Ops}, S};
handle_call({set_rate, Rate}, _From, S) ->
    {reply, ok, S#{rate := Rate, since := erlang:monotonic_time(millisecond), issued := 0}};
handle_call(_, _From, S) ->
    {reply, {error, unknown_request}, S}.

handle_cast(_, S) ->
    {noreply, S}.

handle_info(tick, S = #{running := false}) ->
    {noreply, S};
handle_info(tick, S = #{rate := Rate, since := Since, issued := Issued}) ->
    erlang:send_after(?TICK, self(), tick),
    Now = erlang:monotonic_time(millisecond),
    Due0 = trunc(Rate * (Now - Since) / 1000) - Issued,
    %% After a stall do not burst more than 100 ms worth; the rest is
    %% counted as skipped.
    Cap = max(1, trunc(Rate / 10)),
    Due = case Due0 > Cap of
              true -> counters:add(maps:get(counters, S), ?C_SKIPPED, Due0 - Cap), Cap;
              false -> Due0
          end,
    Issued1 = Issued + max(Due0, 0),
    S1 = dispatch(max(Due, 0), S),
    {noreply, S1#{issued := Issued1}};
handle_info({op_error, E}, S) ->
    {noreply, add_error(E, S)};
handle_info({'EXIT', _, normal}, S) ->
    {noreply, S};
handle_info({'EXIT', Pid, Reason}, S) ->
    {stop, {worker_died, Pid, Reason}, S};
handle_info(_, S) ->
    {noreply, S}.

terminate(_, #{workers := Workers}) ->
    [exit(W, kill) || W <- tuple_to_list(Workers)],
    ok.

dispatch(0, S) ->
    S;
dispatch(N, S = #{keyspace := KS, workers := Ws, pending := P, counters := C,
                  prefix := Prefix, mix := Mix, seq := Seq, max_pending := MaxPending}) ->
    K = rand:uniform(KS),
    Ix = (K rem tuple_size(Ws)) + 1,
    case atomics:get(P, Ix) >= MaxPending of
        true ->
            counters:add(C, ?C_SKIPPED, 1);
        false ->
            atomics:add(P, Ix, 1),
            Id = <<Prefix/binary, (integer_to_binary(K))/binary>>,
            element(Ix, Ws) ! {op, pick(rand:uniform(100), Mix), Id, Seq}
    end,
    dispatch(N - 1, S#{seq := Seq + 1}).

%% Mix weights become cumulative percentages.
mix(M) ->
    Total = lists:sum(maps:values(M)),
    {L, _} = lists:mapfoldl(fun(K, Acc) ->
                                    Acc1 = Acc + maps:get(K, M, 0) * 100 / Total,
                                    {{Acc1, K}, Acc1}
                            end, 0, [K || K <- [store, fetch, delete], maps:is_key(K, M)]),
    L.

pick(_R, [{_, K}]) -> K;
pick(R, [{Limit, K} | _]) when R =< Limit -> K;
pick(R, [_ | T]) -> pick(R, T).

drain_errors(S) ->
    receive {op_error, E} -> drain_errors(add_error(E, S))
    after 0 -> S
    end.

add_error(E, S = #{errors := Q, nerrors := N}) when N >= ?MAX_ERRORS ->
    {_, Q1} = queue:out(Q),
    S#{errors := queue:in(E, Q1)};
add_error(E, S = #{errors := Q, nerrors := N}) ->
    S#{errors := queue:in(E, Q), nerrors := N + 1}.

stats_of(#{counters := C, started := Started, stopped := Stopped, rate := Target,
           errors := Q, running := Running, maxlat := ML}) ->
    End = case Stopped of
              undefined -> erlang:monotonic_time(millisecond);
              T -> T
          end,
    Ops = counters:get(C, ?C_OPS),
    #{ops => Ops,
      errors => counters:get(C, ?C_ERRORS),
      stores => counters:get(C, ?C_STORES),
      fetches => counters:get(C, ?C_FETCHES),
      deletes => counters:get(C, ?C_DELETES),
      skipped => counters:get(C, ?C_SKIPPED),
      read_lost => counters:get(C, ?C_READ_LOST),
      read_wrong => counters:get(C, ?C_READ_WRONG),
      read_resurrected => counters:get(C, ?C_READ_RES),
      uncertain => counters:get(C, ?C_UNCERTAIN),
      rate => Ops * 1000 / max(1, End - Started),
      target_rate => Target,
      %% the longest a client waited for one call to the store (us)
      max_latency_us => atomics:get(ML, 1),
      running => Running,
      last_errors => queue:to_list(Q)}.

%%% workers

%% Hist is this worker's history, newest first (always [] without the
%% history option).
worker(Ix, Ctx = #{pending := P, stop_ix := StopIx}, Hist) ->
    receive
        {op, Kind, Id, Seq} ->
            Hist1 = case atomics:get(P, StopIx) of
                        0 ->
                            T0 = erlang:monotonic_time(nanosecond),
                            {Outcome, Digest} = run(Kind, Id, Seq, Ctx),
                            T1 = erlang:monotonic_time(nanosecond),
                            note_latency(maps:get(maxlat, Ctx), (T1 - T0) div 1000),
                            record(Ctx, Hist, {Ix, Kind, Id, Digest, T0, T1, Outcome});
                        _ ->
                            counters:add(maps:get(counters, Ctx), ?C_SKIPPED, 1),
                            Hist
                    end,
            atomics:sub(P, Ix, 1),
            worker(Ix, Ctx, Hist1);
        {sync, From, Ref} ->
            From ! {Ref, done},
            worker(Ix, Ctx, Hist);
        {history, From, Ref} ->
            From ! {Ref, Ix, lists:reverse(Hist)},
            worker(Ix, Ctx, Hist)
    end.

record(#{history := true}, Hist, Entry) -> [Entry | Hist];
record(_, Hist, _) -> Hist.

note_latency(A, D) ->
    case atomics:get(A, 1) of
        M when D > M ->
            case atomics:compare_exchange(A, 1, M, D) of
                ok -> ok;
                _ -> note_latency(A, D)
            end;
        _ -> ok
    end.

%% run/4 does one operation and returns what the history records of it:
%% {ok | not_found | error | timeout, Digest}.
run(store, Id, Seq, Ctx = #{counters := C, table := T}) ->
    counters:add(C, ?C_STORES, 1),
    S = session(Id, Seq, Ctx),
    case safe(fun() -> erlmcp_session_store:store(Id, S) end) of
        ok -> ets:insert(T, {Id, {stored, strip(S)}}), done(C), {ok, digest(S)};
        Err -> ets:insert(T, {Id, uncertain}), counters:add(C, ?C_UNCERTAIN, 1),
               failed(store, Id, Err, Ctx), {failure(Err), digest(S)}
    end;
run(delete, Id, _Seq, Ctx = #{counters := C, table := T}) ->
    counters:add(C, ?C_DELETES, 1),
    case safe(fun() -> erlmcp_session_store:delete(Id) end) of
        ok -> ets:insert(T, {Id, deleted}), done(C), {ok, 0};
        Err -> ets:insert(T, {Id, uncertain}), counters:add(C, ?C_UNCERTAIN, 1),
               failed(delete, Id, Err, Ctx), {failure(Err), 0}
    end;
run(fetch, Id, _Seq, Ctx = #{counters := C, table := T, shared := Shared}) ->
    counters:add(C, ?C_FETCHES, 1),
    %% In shared mode other nodes write these ids too: this node's record
    %% cannot judge what a fetch reads.
    Known = case Shared of
                true -> unknown;
                false -> case ets:lookup(T, Id) of
                             [{_, V}] -> V;
                             [] -> unknown
                         end
            end,
    case {safe(fun() -> erlmcp_session_store:fetch(Id) end), Known} of
        {{ok, S}, {stored, E}} ->
            case strip(S) of
                E -> done(C);
                _ -> anomaly(?C_READ_WRONG, read_wrong, Id, Ctx)
            end,
            {ok, digest(S)};
        {{ok, S}, deleted} -> anomaly(?C_READ_RES, read_resurrected, Id, Ctx), {ok, digest(S)};
        {{ok, S}, _} -> done(C), {ok, digest(S)};
        {{error, not_found}, {stored, _}} -> anomaly(?C_READ_LOST, read_lost, Id, Ctx), {not_found, 0};
        {{error, not_found}, _} -> done(C), {not_found, 0};
        {Err, _} -> failed(fetch, Id, Err, Ctx), {failure(Err), 0}
    end.

%% A call that did not return ok: a timeout (gen_server's exit) or any
%% other error. Either way a store or delete may have happened.
failure({exit, {timeout, _}}) -> timeout;
failure(_) -> error.

done(C) -> counters:add(C, ?C_OPS, 1).

failed(Op, Id, Err, #{counters := C, coordinator := Co}) ->
    counters:add(C, ?C_OPS, 1),
    counters:add(C, ?C_ERRORS, 1),
    Co ! {op_error, #{op => Op, id => Id, reason => Err,
                      at => erlang:system_time(millisecond)}}.

anomaly(Ix, Kind, Id, #{counters := C, coordinator := Co}) ->
    counters:add(C, ?C_OPS, 1),
    counters:add(C, Ix, 1),
    Co ! {op_error, #{op => fetch, id => Id, reason => Kind,
                      at => erlang:system_time(millisecond)}}.

safe(F) ->
    try F()
    catch Class:Reason -> {Class, Reason}
    end.

session(Id, Seq, #{timeout_ms := Timeout, origin := Origin, name := Name}) ->
    Now = erlang:system_time(millisecond),
    #{id => Id,
      created_at => Now,
      last_accessed => Now,
      timeout_ms => Timeout,
      metadata => #{<<"client">> => #{<<"name">> => <<"erlmcp-loadgen">>,
                                      <<"version">> => <<"1.0.0">>},
                    <<"protocol_version">> => <<"2025-06-18">>,
                    <<"origin">> => Origin,
                    <<"loadgen">> => Name,
                    <<"seq">> => Seq}}.
