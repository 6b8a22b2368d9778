%% @doc The migration backend: two erlmcp session backends behind one, and a
%% phase that says which of them is written and which is read.
%%
%%   phase0  primary only
%%   phase1  dual-write: write both, read the primary
%%   phase2  dual-read: write both, read the secondary for the sessions whose
%%           erlang:phash2(Id, 100) < percent (stable per id), the primary
%%           for the others; a secondary miss or error falls back to the
%%           primary and is counted as a read error when the primary had it
%%   phase3  secondary only
%%
%% Configured as the runbook shows (application env of the store server):
%%   {session_backend, erlmcp_session_backend_hybrid},
%%   {migration_phase, phase1},            % only the FIRST phase, see below
%%   {primary_backend, erlmcp_session_dets},
%%   {secondary_backend, erlmcp_session_mnesia}
%% plus optional backend_opts keys `migration_percent', `primary_opts' and
%% `secondary_opts' (maps merged over the shared options for each side).
%%
%% Where the phase lives. The configured phase is only used when no phase
%% has been recorded yet; after that the recorded one wins, so a restarted
%% node or a node that joins later with a stale config file takes the
%% cluster's phase.
%%   * mnesia mode (either side is erlmcp_session_mnesia and mnesia runs):
%%     the row {migctl_migration, phase, {Phase, Percent, Epoch}} of a small
%%     table replicated (disc_copies) on the cluster's nodes. Every operation
%%     reads it from the local replica (a dirty read: an ETS lookup), so one
%%     Mnesia transaction switches every node at once and a node that
%%     restarts or joins reads the cluster's value when its replica loads.
%%   * file mode (ETS -> DETS on one node, no Mnesia): a DETS file
%%     `migctl_migration.dets' next to the data (dets_dir), cached in
%%     persistent_term so the per-operation cost is one lookup. It survives
%%     a restart of the node; there is no cluster to join.
%% `Epoch' grows by one at every change; set_phase/3 is a compare-and-set on
%% it so two operators cannot interleave changes.
%%
%% Counters (counters module, reference kept in persistent_term, so they
%% survive a restart of the store server but not of the node) are read with
%% counters/0; migctl gates phase3 on read_errors / secondary_reads.
%%
%% Backfill runs INSIDE the store server, through the one door every erlmcp
%% store server has: a fetch. migctl calls the server with
%% {fetch, {migctl_backfill, Request}} (an id no application ever uses: it
%% is not a binary); the server calls fetch/2 of this backend as for any
%% session, and fetch/2 runs the batch and returns {ok, Reply, State}, so
%% the server answers {ok, Reply}. erlmcp's own store server
%% (erlmcp_session_backend) drops every message it does not know, so
%% nothing else would reach the backend. Every read of the source and every
%% conditional write of the target for one batch therefore happen with no
%% application operation of this node in between: a value the application
%% wrote during the backfill is never overwritten by an older one, and a
%% session it deleted cannot be copied back (the copy reads the source
%% after the delete). The target write is additionally conditional
%% (absent, or strictly newer last_accessed, or same last_accessed but a
%% different value from the authoritative side), decided inside one Mnesia
%% transaction under a table write lock, which covers writes that arrive
%% through other nodes' store servers. Limitation (documented in migrate):
%% with one DETS file per node, a session must be served by one node, as
%% erlmcp does with DETS; a delete made through node B of a session that
%% node A also holds in its own DETS file cannot be seen by A's backfill.
%%
%% The module belongs to the migctl_node library and needs nothing of
%% erlmcp but its backend modules (erlmcp_session_ets, _dets, _mnesia,
%% called by the names configured): it implements erlmcp_session_backend's
%% callbacks without naming the behaviour, so the library compiles without
%% erlmcp. Its return shapes are exactly the ones erlmcp's store server
%% matches on (a shape it does not expect would crash that server).
-module(erlmcp_session_backend_hybrid).

%% erlmcp_session_backend's callbacks (terminate/2: the fixture's server
%% calls it when it switches backends; erlmcp's never does).
-export([init/1, store/3, fetch/2, delete/2, list/1, cleanup_expired/1, terminate/2]).
-export([phase/0, set_phase/3, set_phase/4, counters/0, reset_counters/0, info/0,
         server/0, phase_table/0, is_expired/2, now_ms/0, held/2, delete_unchanged/2,
         delete_expired/3,
         dual_writes_pending/0]).
%% The deferred dual-write writer's loop (called by its full name, so a
%% newer version of this module takes over at the next message).
-export([dw_loop/2]).

-export_type([phase/0, phase_value/0]).

-type phase() :: phase0 | phase1 | phase2 | phase3.
%% {Phase, Percent, Epoch} or, since the fallback flag, {..., Fallback}.
-type phase_value() :: {phase(), 0..100, non_neg_integer()}
                     | {phase(), 0..100, non_neg_integer(), boolean()}.
-type session() :: #{atom() => term()}.
-type state() :: map().

-define(TAB, migctl_migration).
-define(TOUCHED, migctl_backfill_touched).
-define(BFKEYS, migctl_backfill_keys).
%% Rows per dets:select chunk of a backfill traversal (a batch reads as
%% many chunks as its size asks for).
-define(SEL_CHUNK, 100).
-define(PENDING, migctl_pending_deletes).
-define(PT_PHASE, {?MODULE, phase}).
-define(PT_MODE, {?MODULE, mode}).
-define(PT_CTR, {?MODULE, counters}).
-define(PT_INFO, {?MODULE, info}).
%% How long init/1 waits for a Mnesia that is starting.
-define(MNESIA_WAIT, 30000).
-define(COUNTERS, [primary_reads, secondary_reads, read_errors, fallbacks,
                   misses, secondary_write_failures, primary_write_failures,
                   phase_read_errors, backfill_written, backfill_skipped,
                   backfill_slot_passes, backfill_key_listings,
                   dets_cleanup_runs, dets_cleanup_deleted, dets_cleanup_paused_ms, dual_writes_deferred,
                   mnesia_cleanup_runs, mnesia_cleanup_deleted]).
-define(HYBRID_KEYS, [primary_backend, secondary_backend, migration_phase,
                      migration_percent, primary_opts, secondary_opts,
                      dual_write_transactions, dets_cleanup_async_above,
                      mnesia_cleanup_async_above]).
%% Above this many objects a DETS side is cleaned of expired sessions by a
%% process of the hybrid's own instead of in the store server (see
%% clean_side/4); option dets_cleanup_async_above (infinity: never).
-define(CLEANUP_ASYNC_ABOVE, 100000).
-define(CLEANER, migctl_dets_cleaner).
%% The same for a Mnesia side (option mnesia_cleanup_async_above), and the
%% ids per transaction of its deletes.
-define(MCLEANER, migctl_mnesia_cleaner).
-define(MCLEAN_CHUNK, 100).
%% Tries of a backfill batch's Mnesia transaction before it gives up on a
%% lock conflict (mnesia:transaction/2's Retries: 3 is two restarts).
-define(COPY_TRIES, 3).
%% Objects per dets:select chunk of that cleaner (one DETS request each).
-define(CLEAN_CHUNK, 500).
%% Rows per DETS insert request of a copy into a DETS file (raw_put/3).
-define(DETS_INSERT, 256).
%% After each chunk the cleaner waits ?CLEAN_PAUSE times as long as the
%% chunk's request took, so it holds the DETS server at most a quarter of
%% the time (see clean_chunks/4).
-define(CLEAN_PAUSE, 3).
%% The longest such wait (ms).
-define(CLEAN_PAUSE_MAX, 1000).
%% The deferred dual-writes (see dual_write/1): the writer's registered
%% name, the key of its counts (atomics) in persistent_term, how long the
%% store server waits for a write when none is queued (ms), and the queue
%% length past which it waits for each write again (memory bound: ~1 KB
%% per queued session).
-define(DW, migctl_dual_writer).
-define(PT_DW, {?MODULE, dual_writes}).
%% 50 ms: a write to five replicas beside the application's traffic takes
%% 30-250 ms on the big run's machine, and a server that waited for each
%% spent most of its time waiting (sampled every 200 ms during the 1.8M
%% run of 22:51: nodes 2-5's store servers, when busy, were mostly in
%% dw_await with every client queued); above 50 ms the write is deferred.
-define(DW_WAIT, 50).
%% After a write that did not come back within ?DW_WAIT, the server does
%% not wait for the next ones for this long (ms): a Mnesia that takes
%% longer than ?DW_WAIT per write would otherwise cost the server ?DW_WAIT
%% per operation whenever the writer has just caught up.
-define(DW_SLOW, 2000).
%% Writes the writer takes from its queue at once (see dw_batch/2).
-define(DW_BATCH, 200).
-define(DW_MAX, 100000).
%% Ids with deletes queued to the writer ({Id, HowMany}): a writer lost
%% with them leaves them to the next backfill batch (pending_delete/1).
-define(DW_DELETES, migctl_dual_write_deletes).

%%% ------------------------------------------------------------ behaviour

%% @doc Opens both sides. Runs in the store server's process, which is
%% recorded (server/0): migctl sends the backfill there.
-spec init(map()) -> {ok, state()} | {error, term()}.
init(Opts) ->
    try
        PMod = required(primary_backend, Opts),
        SMod = required(secondary_backend, Opts),
        Base = maps:without(?HYBRID_KEYS, Opts),
        {ok, PS} = sub_init(PMod, maps:merge(Base, maps:get(primary_opts, Opts, #{}))),
        {ok, SS} = sub_init(SMod, maps:merge(Base, maps:get(secondary_opts, Opts, #{}))),
        watch_resume(PS, SS, Opts),
        ensure_counters(),
        Cfg = {to_phase(maps:get(migration_phase, Opts, phase0)),
               maps:get(migration_percent, Opts, 100), 0},
        Mode = phase_mode(PMod, SMod, PS, Opts),
        persistent_term:put(?PT_MODE, Mode),
        Phase = load_phase(Mode, Cfg),
        persistent_term:put(?PT_PHASE, Phase),
        persistent_term:put(?PT_INFO, #{primary => {PMod, kind(PMod), table(PS)},
                                        secondary => {SMod, kind(SMod), table(SS)},
                                        server => self()}),
        logger:notice("hybrid session backend: ~p -> ~p, phase ~p (~p)",
                      [PMod, SMod, Phase, mode_name(Mode)]),
        {ok, #{p => {PMod, PS}, s => {SMod, SS}, mode => Mode, phase => Phase,
               dirty => not maps:get(dual_write_transactions, Opts, false),
               cleanup_async_above => maps:get(dets_cleanup_async_above, Opts, ?CLEANUP_ASYNC_ABOVE),
               mnesia_cleanup_async_above =>
                   maps:get(mnesia_cleanup_async_above, Opts, ?CLEANUP_ASYNC_ABOVE)}}
    catch
        throw:{hybrid, R} -> {error, R};
        error:{badmatch, {error, R}} -> {error, R}
    end.

-spec store(term(), session(), state()) -> {ok, state()} | {error, term()}.
store(Id, Session, St0) ->
    touch(Id),
    St = refresh(St0),
    case ph(St) of
        phase0 -> wrap_store(p, Id, Session, St);
        phase3 -> wrap_store(s, Id, Session, St);
        P ->
            case wrap_store(p, Id, Session, St) of
                {ok, St1} when P =:= phase2 ->
                    case test_fault_skip_secondary_write() of
                        true -> {ok, St1};
                        false -> second_write(P, sub_store(s, Id, Session, St1))
                    end;
                {ok, St1} -> second_write(P, sub_store(s, Id, Session, St1));
                Err -> Err
            end
    end.

%% TEST ONLY, off by default: the application environment
%% {migctl_node, test_fault_skip_phase2_secondary_write, true} makes a
%% phase2 store skip the secondary write and still answer ok, a lost write
%% the history checker's test (migrate/zeroloss_test.go) must catch. Never
%% set it on a real node.
test_fault_skip_secondary_write() ->
    application:get_env(migctl_node, test_fault_skip_phase2_secondary_write, false) =:= true.

%% @doc A session, or (id {migctl_backfill, Request}) one backfill batch:
%% see the module doc. The batch's reply, {ok, Map} or {error, Reason},
%% is the "session" returned, so the server answers {ok, Reply}.
-spec fetch(term(), state()) -> {ok, term(), state()} | {error, term(), state()}.
fetch({migctl_backfill, Req}, St0) ->
    T0 = erlang:monotonic_time(microsecond),
    St = refresh(St0),
    %% A batch reads and writes the Mnesia side directly: the dual-writes
    %% acknowledged before it are applied first.
    settle(erlmcp_session_mnesia),
    Reply = try backfill(Req, St)
            catch
                throw:{hybrid, R} -> _ = erase(mnesia_activity_state), {error, R};
                C:R ->
                    _ = erase(mnesia_activity_state),
                    {error, iolist_to_binary(io_lib:format("~p:~0P", [C, R, 20]))}
            end,
    %% What the batch cost this server (turn_us) and how many requests
    %% queued up behind it meanwhile (waiting): migctl_migrate sizes the
    %% next batch from them, so that the application's calls are not held
    %% longer than a budget while requests are arriving.
    Reply1 = case Reply of
                 {ok, #{} = M} ->
                     {message_queue_len, Q} = process_info(self(), message_queue_len),
                     {ok, M#{turn_us => erlang:monotonic_time(microsecond) - T0, waiting => Q}};
                 _ -> Reply
             end,
    {ok, {migctl_backfill_reply, Reply1}, St};
fetch({migctl_persist, Req}, St) ->
    {ok, {migctl_persist_reply, watch_request(Req)}, St};
fetch(Id, St0) ->
    touch(Id),
    St = refresh(St0),
    case ph(St) of
        phase0 -> fetch_from(p, Id, St);
        phase3 -> fetch_from(s, Id, St);
        phase1 -> fetch_then_copy(p, s, Id, St);
        phase2 ->
            case routed(Id, St) of
                false -> fetch_then_copy(p, s, Id, St);
                true -> fetch_secondary_first(Id, St)
            end
    end.

-spec delete(term(), state()) -> {ok, state()} | {error, term(), state()}.
delete(Id, St0) ->
    touch(Id),
    St = refresh(St0),
    case ph(St) of
        phase0 -> sub_delete(p, Id, St);
        phase3 -> sub_delete(s, Id, St);
        P ->
            case sub_delete(p, Id, St) of
                {ok, St1} ->
                    case sub_delete(s, Id, St1) of
                        {ok, St2} -> {ok, St2};
                        {error, R, St2} ->
                            bump(secondary_write_failures),
                            case P of
                                phase1 ->
                                    %% The next backfill batch deletes it
                                    %% from the secondary (a copy cannot).
                                    pending_delete(Id),
                                    {ok, St2};
                                phase2 -> {error, {secondary_delete_failed, R}, St2}
                            end
                    end;
                Err -> Err
            end
    end.

%% erlmcp's store server accepts only {ok, Ids, State} from list/1 (any
%% other shape crashes it): a side that cannot be listed raises, which is
%% what erlmcp's own backends do. In phase2 the primary, written first by
%% every operation, holds every session: it answers if the secondary fails.
-spec list(state()) -> {ok, [term()], state()}.
list(St0) ->
    St = refresh(St0),
    case ph(St) of
        phase2 ->
            case {sub_list(p, St), sub_list(s, St)} of
                {{ok, A, _}, {ok, B, _}} -> {ok, lists:usort(A ++ B), St};
                {{ok, A, _}, {error, _, _}} -> {ok, A, St};
                {{error, R, _}, _} -> erlang:error({hybrid_list, R})
            end;
        P when P =:= phase0; P =:= phase1 -> listed(sub_list(p, St));
        phase3 -> listed(sub_list(s, St))
    end.

listed({ok, Ids, St}) -> {ok, Ids, St};
listed({error, R, _}) -> erlang:error({hybrid_list, R}).

-spec cleanup_expired(state()) -> {ok, non_neg_integer(), state()}.
cleanup_expired(St0) ->
    St = refresh(St0),
    {PMod, PS} = maps:get(p, St),
    {SMod, SS} = maps:get(s, St),
    Above = #{dets => maps:get(cleanup_async_above, St, ?CLEANUP_ASYNC_ABOVE),
              mnesia => maps:get(mnesia_cleanup_async_above, St, ?CLEANUP_ASYNC_ABOVE)},
    Clean = fun(M, S) -> clean_side(kind(M), M, S, maps:get(kind(M), Above, infinity)) end,
    N = case ph(St) of
            phase0 -> Clean(PMod, PS);
            phase3 -> Clean(SMod, SS);
            _ -> max(Clean(PMod, PS), Clean(SMod, SS))
        end,
    {ok, N, St}.

%% clean_side(Kind, Mod, State, Above) -> the number of sessions deleted.
%%
%% erlmcp's DETS backend cleans by reading the whole file in the store
%% server (a dets:foldl, then a delete per expired session): with 1.4M
%% sessions (1.8 GB) that held the server 18-33 s of every minute in
%% migctl's big run, and every application call of the node waited behind
%% it (clients give up after 5 s). Above Above objects the hybrid cleans
%% the DETS side from a process of its own instead (dets_cleaner/2): one
%% DETS request per chunk, so the application's requests go in between,
%% and the store server returns at once. The count it returns is then 0:
%% the cleaner counts what it deleted in dets_cleanup_deleted.
%%
%% A Mnesia side above its own Above (mnesia_cleanup_async_above) is
%% cleaned the same way, by mnesia_cleaner/1: erlmcp's Mnesia backend
%% cleans inside the store server by reading every key and every row in
%% one transaction (a read lock on the whole table, then one read per
%% session), so at the sizes this migration is for the server would
%% spend most of each minute in it from phase1 on, as the DETS side's
%% did. Below Above (and for ETS) the backend's own cleanup runs.
clean_side(dets, M, #{table_name := T} = S, Above) when is_integer(Above) ->
    case dets:info(T, no_objects) of
        N when is_integer(N), N > Above ->
            dets_cleaner(T),
            0;
        _ ->
            clean_sync(dets, M, S)
    end;
clean_side(mnesia, M, #{table_name := T} = S, Above) when is_integer(Above) ->
    %% A node without a copy of its own (table_info's storage_type is
    %% unknown: during a backfill with --replicate-after the other nodes'
    %% replicas are removed) reads the table remotely, and table_info(T,
    %% size) answers 0 there. Its cleanup is then a remote select over the
    %% whole table (5 s at 1.8M sessions in migctl's big run, with every
    %% client call of the node queued behind it and timing out together):
    %% that goes to the cleaner too, whatever the size.
    Local = catch mnesia:table_info(T, storage_type),
    case catch mnesia:table_info(T, size) of
        N when is_integer(N), N > Above ->
            mnesia_cleaner(T),
            0;
        _ when Local =:= unknown ->
            mnesia_cleaner(T),
            0;
        _ ->
            clean_sync(mnesia, M, S)
    end;
clean_side(K, M, S, _) ->
    clean_sync(K, M, S).

clean_sync(K, M, S) ->
    N = case guard(fun() -> M:cleanup_expired(S) end) of
            {ok, N0, _} -> N0;
            _ -> 0
        end,
    %% A DETS pass in progress takes "nothing written since the fixation"
    %% to mean that its traversal saw every row: deletions count as writes
    %% (which ids the backend deleted is not known: the pass lists every
    %% key at its end).
    K =:= dets andalso N > 0 andalso touch('$cleanup'),
    N.

%% dets_cleaner(T): starts the cleaning of T unless a run is still going
%% on (one per node). The run reads the file a chunk at a time and deletes
%% an expired session only if it is still exactly the object it read: one
%% select_delete whose clauses name each id and its object as constants
%% (DETS looks the ids up, and checks and deletes within one request of
%% its server), so a session the application refreshed or rewrote in
%% between is kept, as with erlmcp's cleanup inside the store server.
%% Every deleted id is touched like an application delete, so a backfill
%% pass in progress reads its slot again. The traversal is not fixed: a
%% session it misses is deleted by the next run. The process is not
%% linked to the store server and ends with it (monitor).
dets_cleaner(T) ->
    Server = self(),
    run_once(?CLEANER, fun() -> clean_run(T, Server) end).

%% run_once(Name, F): F in a new process registered as Name, unless one is
%% still running (a cleanup run slower than the interval is not doubled).
run_once(Name, F) ->
    case whereis(Name) of
        P when is_pid(P) -> ok;
        undefined ->
            _ = spawn(fun() ->
                              case catch register(Name, self()) of
                                  true -> F();
                                  _ -> ok
                              end
                      end),
            ok
    end.

clean_run(T, Server) ->
    erlang:monitor(process, Server),
    add(dets_cleanup_runs, 1),
    Now = now_ms(),
    clean_chunks(T, Server, dets:select(T, [{'_', [], ['$_']}], ?CLEAN_CHUNK), Now).

clean_chunks(_T, _Server, '$end_of_table', _Now) -> ok;
clean_chunks(_T, _Server, {error, R}, _Now) ->
    logger:warning("hybrid session backend: DETS cleanup stopped: ~0P", [R, 20]);
clean_chunks(T, Server, {Objs, Cont}, Now) ->
    receive {'DOWN', _, process, Server, _} -> exit(normal) after 0 -> ok end,
    Expired = [O || {Id, S} = O <- Objs, is_binary(Id), is_map(S), is_expired(S, Now)],
    N = delete_unchanged(T, Expired),
    N > 0 andalso add(dets_cleanup_deleted, N),
    %% Paced: unpaced, the run's chunk requests followed each other and
    %% every application request of the node waited for one (a DETS
    %% server answers in turn). In the 1.8M-session big run a run read the
    %% file for most of each minute: node 1's DETS server was inside the
    %% cleaner's scan in 187 of 197 samples (5 a second) while the store
    %% server kept 7 calls waiting, and node 1 served 71-83 client ops/s
    %% where the others served 200, with up to 83 client timeouts (5 s).
    %% With a pause of ?CLEAN_PAUSE times the request's time the
    %% application's requests queued meanwhile are served back to back;
    %% a run takes about four times as long (a session expired is deleted
    %% a few minutes late, not one; erlmcp's fetch does not look at
    %% expiry either way).
    T0 = erlang:monotonic_time(microsecond),
    Next = dets:select(Cont),
    Took = erlang:monotonic_time(microsecond) - T0,
    Pause = min((?CLEAN_PAUSE * Took + 999) div 1000, ?CLEAN_PAUSE_MAX),
    Pause > 0 andalso add(dets_cleanup_paused_ms, Pause),
    receive {'DOWN', _, process, Server, _} -> exit(normal) after Pause -> ok end,
    clean_chunks(T, Server, Next, Now).

%% delete_unchanged(T, Objects) -> the number deleted: each {Id, Session}
%% of Objects that T still holds exactly, in one request of the DETS
%% server (the check and the delete are atomic). Every id is touched (a
%% backfill pass reads its slot again). Exported for the cleaner's test.
-spec delete_unchanged(atom(), [{binary(), session()}]) -> non_neg_integer().
delete_unchanged(T, Objs) ->
    case [{{Id, '$1'}, [{'=:=', '$1', {const, S}}], [true]} || {Id, S} <- Objs, is_binary(Id)] of
        [] -> 0;
        MS -> delete_matching(T, MS, Objs)
    end.

delete_matching(T, MS, Objs) ->
    case dets:select_delete(T, MS) of
        N when is_integer(N) ->
            N > 0 andalso lists:foreach(fun({Id, _}) -> touch(Id) end, Objs),
            N;
        {error, R} ->
            logger:warning("hybrid session backend: DETS cleanup delete failed: ~0P", [R, 20]),
            0
    end.

%% mnesia_cleaner(T): starts the cleaning of the Mnesia table T unless a
%% run is still going on (one per node). The run lists the expired ids
%% with one dirty select (the selection runs where the table is read, not
%% in the store server, and takes no lock), then deletes them
%% ?MCLEAN_CHUNK at a time, each chunk in a transaction that reads every
%% id again with a write lock and deletes it only if its session is still
%% expired: a session refreshed in between is kept, as with erlmcp's own
%% cleanup. A write of phase1 still queued to the dual-writer (see
%% dual_write/1) lands after the delete and brings the refreshed session
%% back, as it would have after erlmcp's. The process is not linked to
%% the store server and ends with it (monitor).
mnesia_cleaner(T) ->
    Server = self(),
    run_once(?MCLEANER, fun() -> mclean_run(T, Server) end).

mclean_run(T, Server) ->
    erlang:monitor(process, Server),
    add(mnesia_cleanup_runs, 1),
    Now = now_ms(),
    case catch mnesia:dirty_select(T, [{expired_head(T), expired_guard(Now), ['$1']}]) of
        Ids when is_list(Ids) -> mclean_chunks(T, Server, Ids, Now);
        Err -> logger:warning("hybrid session backend: Mnesia cleanup stopped: ~0P", [Err, 20])
    end.

%% The rows of T (erlmcp's record: {Name, Id, Session, LastAccessed}) and
%% the guard of an expired session ('$2': is_expired/2 as a match spec).
expired_head(T) -> {mnesia:table_info(T, record_name), '$1', '$2', '_'}.

expired_guard(Now) ->
    [{is_map, '$2'},
     {'=/=', {map_get, timeout_ms, '$2'}, infinity},
     {is_integer, {map_get, timeout_ms, '$2'}},
     {is_integer, {map_get, last_accessed, '$2'}},
     {'>', {'-', Now, {map_get, last_accessed, '$2'}}, {map_get, timeout_ms, '$2'}}].

mclean_chunks(_T, _Server, [], _Now) -> ok;
mclean_chunks(T, Server, Ids, Now) ->
    receive {'DOWN', _, process, Server, _} -> exit(normal) after 0 -> ok end,
    {Chunk, Rest} = lists:split(min(?MCLEAN_CHUNK, length(Ids)), Ids),
    case delete_expired(T, Chunk, Now) of
        {atomic, N} ->
            N > 0 andalso add(mnesia_cleanup_deleted, N),
            mclean_chunks(T, Server, Rest, Now);
        {aborted, R} ->
            logger:warning("hybrid session backend: Mnesia cleanup delete failed: ~0P", [R, 20])
    end.

%% delete_expired(T, Ids, Now) -> {atomic, N} | {aborted, Reason}: in one
%% transaction, each of Ids whose session in T is expired at Now (read
%% again, with a write lock) deleted; N of them. Exported for the
%% cleaner's test.
-spec delete_expired(atom(), [term()], integer()) -> {atomic, non_neg_integer()} | {aborted, term()}.
delete_expired(T, Ids, Now) ->
    mnesia:transaction(
      fun() ->
              lists:foldl(fun(Id, N) ->
                                  case mnesia:read(T, Id, write) of
                                      [{_, Id, S, _}] ->
                                          case is_expired(S, Now) of
                                              true -> ok = mnesia:delete(T, Id, write), N + 1;
                                              false -> N
                                          end;
                                      _ -> N
                                  end
                          end, 0, Ids)
      end).

-spec terminate(term(), state()) -> ok.
terminate(Reason, #{p := {PMod, PS}, s := {SMod, SS}}) ->
    %% The server switches to another backend (the fixture can): it no
    %% longer runs this one. The dual-writes it acknowledged are applied
    %% before the next backend touches the store.
    settle(erlmcp_session_mnesia),
    case persistent_term:get(?PT_INFO, undefined) of
        #{server := Me} = I when Me =:= self() ->
            persistent_term:put(?PT_INFO, maps:remove(server, I));
        _ -> ok
    end,
    [catch M:terminate(Reason, S) || {M, S} <- [{PMod, PS}, {SMod, SS}],
                                     erlang:function_exported(M, terminate, 2)],
    ok.

%%% ------------------------------------------------------------ public

%% @doc {Phase, Percent, Epoch} as this node sees it now.
-spec phase() -> phase_value() | {error, not_running}.
phase() ->
    case persistent_term:get(?PT_MODE, undefined) of
        undefined -> {error, not_running};
        Mode -> read_phase(Mode, persistent_term:get(?PT_PHASE, {phase0, 100, 0}))
    end.

%% @doc Records a new phase if the recorded epoch is still Expect. In mnesia
%% mode one transaction changes it for the whole cluster. Returns the new
%% epoch.
-spec set_phase(phase() | binary() | string(), 0..100, non_neg_integer()) ->
          {ok, pos_integer()} | {error, term()}.
set_phase(Phase, Percent, Expect) ->
    set_phase(Phase, Percent, Expect, true).

%% @doc As set_phase/3; Fallback = false turns off phase2's fallback to the
%% primary after a secondary miss. migctl does that when it rolls back from
%% phase3: the primary then lacks what phase3 wrote and still holds what
%% phase3 deleted, so falling back to it would serve (and copy back) a
%% deleted session until the reverse backfill is done.
-spec set_phase(phase() | binary() | string(), 0..100, non_neg_integer(), boolean()) ->
          {ok, pos_integer()} | {error, term()}.
set_phase(Phase0, Percent, Expect, Fallback) when is_integer(Percent), Percent >= 0,
                                                   Percent =< 100, is_boolean(Fallback) ->
    Phase = to_phase(Phase0),
    New = fun(E) -> {Phase, Percent, E + 1, Fallback} end,
    case persistent_term:get(?PT_MODE, undefined) of
        undefined -> {error, not_running};
        mnesia ->
            F = fun() ->
                        case mnesia:read(?TAB, phase, write) of
                            [{?TAB, phase, V}] when element(3, V) =:= Expect ->
                                ok = mnesia:write({?TAB, phase, New(Expect)}),
                                Expect + 1;
                            [{?TAB, phase, V}] ->
                                mnesia:abort({epoch_mismatch, element(3, V)});
                            [] ->
                                mnesia:abort(no_phase_record)
                        end
                end,
            case mnesia:transaction(F) of
                {atomic, E} -> {ok, E};
                {aborted, R} -> {error, R}
            end;
        {file, T} ->
            case dets:lookup(T, phase) of
                [{phase, V}] when element(3, V) =:= Expect ->
                    ok = dets:insert(T, {phase, New(Expect)}),
                    ok = dets:sync(T),
                    persistent_term:put(?PT_PHASE, New(Expect)),
                    {ok, Expect + 1};
                [{phase, V}] -> {error, {epoch_mismatch, element(3, V)}};
                Other -> {error, {no_phase_record, Other}}
            end
    end;
set_phase(_, _, _, _) ->
    {error, bad_phase_args}.

%% @doc The counters as a map of name => integer.
-spec counters() -> #{atom() => integer()}.
counters() ->
    C = ensure_counters(),
    maps:from_list([{N, counters:get(C, I)} || {N, I} <- lists:zip(?COUNTERS, lists:seq(1, length(?COUNTERS)))]).

-spec reset_counters() -> ok.
reset_counters() ->
    C = ensure_counters(),
    [counters:put(C, I, 0) || I <- lists:seq(1, length(?COUNTERS))],
    ok.

%% @doc What the store server runs: sides, phase mode, phase, and the
%% server's pid (`server', absent once it switched to another backend).
-spec info() -> map() | {error, not_running}.
info() ->
    case persistent_term:get(?PT_INFO, undefined) of
        undefined -> {error, not_running};
        I -> I#{mode => mode_name(persistent_term:get(?PT_MODE)), phase => phase()}
    end.

%% @doc The store server running this backend, wherever and under whatever
%% name the application started it; undefined when none runs it now.
-spec server() -> pid() | undefined.
server() ->
    case persistent_term:get(?PT_INFO, undefined) of
        #{server := Pid} -> case is_process_alive(Pid) of true -> Pid; false -> undefined end;
        _ -> undefined
    end.

-spec phase_table() -> atom().
phase_table() -> ?TAB.

%% @doc erlmcp's expiry rule: never for `infinity', otherwise when more
%% than `timeout_ms' has passed since `last_accessed'.
-spec is_expired(session(), integer()) -> boolean().
is_expired(#{timeout_ms := infinity}, _Now) -> false;
is_expired(#{last_accessed := L, timeout_ms := T}, Now) when is_integer(L), is_integer(T) ->
    Now - L > T;
is_expired(_, _) -> false.

%% @doc The clock erlmcp's backends write (erlang:system_time(millisecond)).
-spec now_ms() -> integer().
now_ms() -> erlang:system_time(millisecond).

%%% ------------------------------------------------------------ phases

refresh(St = #{mode := Mode, phase := Old}) ->
    St#{phase := read_phase(Mode, Old)}.

read_phase(mnesia, Old) ->
    try mnesia:dirty_read(?TAB, phase) of
        [{?TAB, phase, V}] -> V;
        [] -> bump(phase_read_errors), Old
    catch
        _:_ -> bump(phase_read_errors), Old
    end;
read_phase({file, _}, _Old) ->
    persistent_term:get(?PT_PHASE).

ph(#{phase := V}) -> element(1, V).

%% Records written before the fallback flag existed have three elements.
fallback(#{phase := {_, _, _, F}}) -> F;
fallback(_) -> true.

routed(Id, #{phase := V}) -> erlang:phash2(Id, 100) < element(2, V).

phase_mode(PMod, SMod, PS, Opts) ->
    UsesMnesia = lists:member(erlmcp_session_mnesia, [PMod, SMod]),
    case UsesMnesia andalso mnesia:system_info(is_running) =:= yes of
        true -> ensure_table(Opts), mnesia;
        false -> {file, open_file(PS, Opts)}
    end.

ensure_table(Opts) ->
    Nodes = case maps:find(mnesia_nodes, Opts) of
                {ok, Ns} when is_list(Ns) -> Ns;
                _ -> mnesia:system_info(running_db_nodes)
            end,
    case lists:member(?TAB, mnesia:system_info(tables)) of
        true -> ok;
        false ->
            case mnesia:create_table(?TAB, [{attributes, [key, value]},
                                             {disc_copies, Nodes}]) of
                {atomic, ok} -> ok;
                {aborted, {already_exists, _}} -> ok;
                {aborted, _} ->
                    _ = mnesia:create_table(?TAB, [{attributes, [key, value]},
                                                   {ram_copies, Nodes}]),
                    ok
            end
    end,
    %% A node that joined later reads its own replica, not a remote one.
    case lists:member(node(), mnesia:table_info(?TAB, disc_copies) ++
                          mnesia:table_info(?TAB, ram_copies)) of
        true -> ok;
        false -> _ = mnesia:add_table_copy(?TAB, node(), disc_copies), ok
    end,
    case mnesia:wait_for_tables([?TAB], 30000) of
        ok -> ok;
        Other -> throw({hybrid, {phase_table_not_loaded, Other}})
    end.

open_file(PS, Opts) ->
    Dir = case maps:find(dets_dir, Opts) of
              {ok, D} -> D;
              error ->
                  case is_map(PS) andalso maps:find(file_path, PS) of
                      {ok, F} -> filename:dirname(F);
                      _ -> "."
                  end
          end,
    File = filename:join(to_list(Dir), "migctl_migration.dets"),
    case dets:open_file(?TAB, [{file, File}, {type, set}, {auto_save, 1000}]) of
        {ok, T} -> T;
        {error, R} -> throw({hybrid, {phase_file, R}})
    end.

load_phase(mnesia, Cfg) ->
    F = fun() ->
                case mnesia:read(?TAB, phase, write) of
                    [{?TAB, phase, V}] -> V;
                    [] -> ok = mnesia:write({?TAB, phase, Cfg}), Cfg
                end
        end,
    case mnesia:transaction(F) of
        {atomic, V} -> V;
        {aborted, R} -> throw({hybrid, {phase_table, R}})
    end;
load_phase({file, T}, Cfg) ->
    case dets:lookup(T, phase) of
        [{phase, V}] -> V;
        [] -> ok = dets:insert(T, {phase, Cfg}), ok = dets:sync(T), Cfg
    end.

mode_name(mnesia) -> mnesia;
mode_name({file, _}) -> file;
mode_name(M) -> M.

to_phase(P) when P =:= phase0; P =:= phase1; P =:= phase2; P =:= phase3 -> P;
to_phase(B) when is_binary(B) -> to_phase(binary_to_existing_atom(B));
to_phase(L) when is_list(L) -> to_phase(list_to_existing_atom(L));
to_phase(P) -> throw({hybrid, {bad_phase, P}}).

%%% ------------------------------------------------------------ operations

sub_init(Mod, Opts) ->
    case code:ensure_loaded(Mod) of
        {module, Mod} ->
            Mod =:= erlmcp_session_mnesia andalso await_mnesia(?MNESIA_WAIT),
            Mod:init(Opts);
        {error, R} -> throw({hybrid, {no_backend_module, Mod, R}})
    end.

side(p, St) -> maps:get(p, St);
side(s, St) -> maps:get(s, St).

put_side(p, S, St) -> St#{p := S};
put_side(s, S, St) -> St#{s := S}.

sub_store(W, Id, Session, St) ->
    {M, S} = side(W, St),
    case deferrable(W, M, St) of
        {true, T} ->
            dual_write({store, T, {T, Id, Session, now_ms()}}),
            {ok, St};
        false ->
            settle(M),
            sub_store_now(M, S, W, Id, Session, St)
    end.

sub_store_now(M, S, W, Id, Session, St) ->
    case fast(M, St) of
        {true, T} ->
            Rec = {T, Id, Session, now_ms()},
            case dirty(fun() -> mnesia:write(T, Rec, write) end) of
                ok -> {ok, St};
                {error, R} -> {error, R, St}
            end;
        false ->
            case guard(fun() -> M:store(Id, Session, S) end) of
                {ok, S1} -> {ok, put_side(W, {M, S1}, St)};
                {error, R} -> {error, R, St}
            end
    end.

%% In the dual-write phases a Mnesia side is written with sync_dirty (it
%% returns when every replica has applied the write) instead of one
%% transaction per operation: on three disc replicas a transaction costs
%% ~3 ms here against ~0.25 ms, and the store server does every operation
%% of its node one after the other, so the transaction would cap the
%% application at a few hundred operations per second per node during the
%% migration. The records are exactly erlmcp_session_mnesia's. Ordering per
%% session is given by the store server of the node that serves it (erlmcp
%% sessions with a per-node DETS store are node-sticky). Option
%% `dual_write_transactions => true' restores the backend's transactions.
%% Phase0 and phase3 always go through the backend modules unchanged.
%%
%% While migctl's heal fences this node (persistent_term migctl_fence_until
%% holds a time in the future, set by migctl_cluster:fence_flag/1), the
%% backend's transactions are used: they wait on the fence's table lock,
%% where a dirty write would slip past it and be acknowledged after the
%% heal's last read of this side's changes.
fast(erlmcp_session_mnesia, #{dirty := true, phase := V, s := {_, SS}, p := {_, PS}} = St) ->
    Fenced = fenced(),
    case element(1, V) of
        P when (P =:= phase1 orelse P =:= phase2) andalso not Fenced ->
            T = case maps:get(s, St) of
                    {erlmcp_session_mnesia, _} -> table(SS);
                    _ -> table(PS)
                end,
            {true, T};
        _ -> false
    end;
fast(_, _) ->
    false.

dirty(F) ->
    dirty(sync_dirty, F).

dirty(Kind, F) ->
    try mnesia:Kind(F) of
        _ -> ok
    catch
        %% As in guard/1: a stop of Mnesia under the write leaves the
        %% activity behind; it is stale.
        exit:{aborted, R} -> _ = erase(mnesia_activity_state), {error, R};
        exit:R -> _ = erase(mnesia_activity_state), {error, R};
        error:R -> _ = erase(mnesia_activity_state), {error, R}
    end.

wrap_store(W, Id, Session, St) ->
    case sub_store(W, Id, Session, St) of
        {ok, St1} -> {ok, St1};
        {error, R, _} -> {error, R}
    end.

%% The secondary write of a dual-write phase. In phase1 the primary is what
%% is read, so a failure is counted and the application carries on; in
%% phase2 the secondary is read, so hiding the failure would serve a stale
%% value: the caller gets the error.
second_write(phase1, {ok, St}) -> {ok, St};
second_write(phase2, {ok, St}) -> {ok, St};
second_write(phase1, {error, _, St}) -> bump(secondary_write_failures), {ok, St};
second_write(phase2, {error, R, _}) -> bump(secondary_write_failures), {error, {secondary_write_failed, R}}.

sub_fetch(W, Id, St) ->
    {M, S} = side(W, St),
    settle(M),
    case fast(M, St) of
        {true, T} ->
            try mnesia:dirty_read(T, Id) of
                [{_, _, Sess, _}] ->
                    Now = now_ms(),
                    Updated = Sess#{last_accessed => Now},
                    case dirty(fun() -> mnesia:write(T, {T, Id, Updated, Now}, write) end) of
                        ok -> {ok, Updated, St};
                        {error, R} -> {error, R, St}
                    end;
                [] -> {error, not_found, St}
            catch
                exit:R -> {error, R, St}
            end;
        false ->
            case guard(fun() -> M:fetch(Id, S) end) of
                {ok, Sess, S1} -> {ok, Sess, put_side(W, {M, S1}, St)};
                {error, R, S1} -> {error, R, put_side(W, {M, S1}, St)};
                {error, R} -> {error, R, St}
            end
    end.

sub_delete(W, Id, St) ->
    {M, S} = side(W, St),
    case deferrable(W, M, St) of
        {true, T} ->
            _ = ets:update_counter(dw_deletes(), Id, {2, 1}, {Id, 0}),
            dual_write({delete, T, Id}),
            {ok, St};
        false ->
            settle(M),
            sub_delete_now(M, S, W, Id, St)
    end.

sub_delete_now(M, S, W, Id, St) ->
    case fast(M, St) of
        {true, T} ->
            case dirty(fun() -> mnesia:delete(T, Id, write) end) of
                ok -> {ok, St};
                {error, R} -> {error, R, St}
            end;
        false ->
            case guard(fun() -> M:delete(Id, S) end) of
                {ok, S1} -> {ok, put_side(W, {M, S1}, St)};
                {error, R, S1} -> {error, R, put_side(W, {M, S1}, St)};
                {error, R} -> {error, R, St}
            end
    end.

sub_list(W, St) ->
    {M, S} = side(W, St),
    settle(M),
    case guard(fun() -> M:list(S) end) of
        {ok, Ids, S1} -> {ok, Ids, put_side(W, {M, S1}, St)};
        {error, R, S1} -> {error, R, put_side(W, {M, S1}, St)};
        {error, R} -> {error, R, St}
    end.

fetch_from(W, Id, St) ->
    bump(case W of p -> primary_reads; s -> secondary_reads end),
    sub_fetch(W, Id, St).

%% A fetch is a write (it rewrites last_accessed): in the dual-write phases
%% the refreshed session goes to the other store too.
fetch_then_copy(From, To, Id, St) ->
    case fetch_from(From, Id, St) of
        {ok, Sess, St1} ->
            case sub_store(To, Id, Sess, St1) of
                {ok, St2} -> {ok, Sess, St2};
                {error, _, St2} ->
                    bump(case To of s -> secondary_write_failures;
                             p -> primary_write_failures end),
                    {ok, Sess, St2}
            end;
        Other ->
            Other
    end.

fetch_secondary_first(Id, St) ->
    case fetch_from(s, Id, St) of
        {ok, Sess, St1} ->
            case sub_store(p, Id, Sess, St1) of
                {ok, St2} -> {ok, Sess, St2};
                {error, _, St2} -> bump(primary_write_failures), {ok, Sess, St2}
            end;
        {error, not_found, St1} ->
            case fallback(St1) of
                true -> fallback_read(Id, not_found, St1);
                false -> bump(misses), {error, not_found, St1}
            end;
        {error, Why, St1} ->
            case fallback(St1) of
                true -> fallback_read(Id, Why, St1);
                false -> bump(read_errors), {error, Why, St1}
            end
    end.

fallback_read(Id, Why, St1) ->
    bump(fallbacks),
    case sub_fetch(p, Id, St1) of
        {ok, Sess, St2} ->
            %% The secondary should have had it: a read error. Repair.
            bump(read_errors),
            case sub_store(s, Id, Sess, St2) of
                {ok, St3} -> {ok, Sess, St3};
                {error, _, St3} -> bump(secondary_write_failures), {ok, Sess, St3}
            end;
        {error, not_found, St2} when Why =:= not_found ->
            bump(misses),
            {error, not_found, St2};
        {error, R, St2} ->
            case Why of
                not_found -> ok;
                _ -> bump(read_errors)
            end,
            {error, R, St2}
    end.

%%% ------------------------------------------------------------ deferred dual-writes
%%
%% In phase1 the application reads the primary; the Mnesia side is a copy
%% that the backfill and the check vouch for. Its write still used to hold
%% the store server until every replica had applied it, and Mnesia stops
%% every write to a table, dirty ones included, while a replica of it is
%% being added: the new disc_copies replica writes the whole table to its
%% disc (mnesia_loader's last step) with the table's where_to_commit
%% {blocked, _} on every node. At 1.8M sessions that took long enough for
%% the application's 5 s calls to time out on every node (503-1,043 in
%% the big runs), behind a write nobody was going to read before phase2.
%%
%% So in phase1 the Mnesia side's writes and deletes go to one writer
%% process per node (dual_write/1), which applies them in the order the
%% store server made them. When nothing is queued the server waits for
%% its write as before (up to ?DW_WAIT ms; not at all for ?DW_SLOW ms
%% after one that took longer), so normally the Mnesia side is as current
%% as it was; when the write does not come back in time, or
%% others are queued, the call returns once the primary has it, and the
%% write is counted in dual_writes_deferred. Past ?DW_MAX queued writes
%% the server waits for each again (a bound on the writer's memory).
%%
%% What keeps this as safe as the synchronous write:
%%   * order: every Mnesia access of the store server that is not itself
%%     deferred (any other phase, a fenced node, a backfill batch, a list,
%%     the backend being switched) first waits for the queue (settle/1),
%%     so a phase2 read after phase1 writes sees them, and a session's
%%     writes reach Mnesia in the order its node's server made them;
%%   * failures: the writer counts a failed write in
%%     secondary_write_failures and keeps a failed delete for the next
%%     backfill batch (pending_delete/1), as the server did; a writer that
%%     dies with writes queued (the node stops, someone kills it) counts
%%     them as failures too (lost_writes/1), and the phase2 gate refuses
%%     after any failure since the backfill began, so a backfill runs
%%     again: it copies what the lost stores missed, and the deletes that
%%     were queued (kept by id until applied) become pending deletes that
%%     its batches apply, so a session deleted meanwhile cannot come back;
%%   * the heal's fence: the writer uses transactions while the node is
%%     fenced, as the server does, so they wait on the fence's lock;
%%   * migctl's phase2/phase3 gate dual_writes_applied refuses while any
%%     node has writes queued (status: dual_writes_pending).
%% Limitation: writes queued when the node itself stops are gone from the
%% Mnesia side only (the primary has them): the check reports them and a
%% backfill copies them, as for any failed dual-write.

%% deferrable(Side, Mod, St): {true, Table} when this write of the Mnesia
%% side goes through the writer: the secondary in phase1 on the dirty path
%% (not fenced, no dual_write_transactions).
deferrable(s, erlmcp_session_mnesia, #{phase := V} = St) when element(1, V) =:= phase1 ->
    fast(erlmcp_session_mnesia, St);
deferrable(_, _, _) ->
    false.

%% The counts (atomics): 1 writes queued so far (a write's sequence number
%% is the count after its own), 2 writes applied (in queue order, so also
%% the sequence number of the last one applied), 3 the sequence number of
%% the last write acknowledged to the application before it was applied,
%% 4 the time (ms) until which the server does not wait (?DW_SLOW).
%% Writes 2..3 are the backlog the phase gates wait for; a write the
%% server is still waiting for is not part of it (it is not acknowledged).
dual_write(Op) ->
    C = dw_counts(),
    W = dual_writer(C),
    Pending = atomics:get(C, 1) - atomics:get(C, 2),
    Seq = atomics:add_get(C, 1, 1),
    Slow = atomics:get(C, 4) > erlang:monotonic_time(millisecond),
    if
        Pending >= ?DW_MAX -> dw_await(W, Op, infinity, C, Seq);
        Pending =:= 0, not Slow -> dw_await(W, Op, ?DW_WAIT, C, Seq);
        true -> W ! {?DW, none, Op}, deferred(C, Seq)
    end,
    ok.

%% Sends Op with a reply alias and waits up to Ms for the writer to apply
%% it; a reply after that is dropped (the alias is gone with the monitor).
dw_await(W, Op, Ms, C, Seq) ->
    M = erlang:monitor(process, W, [{alias, reply_demonitor}]),
    W ! {?DW, M, Op},
    receive
        {M, _} -> ok;
        {'DOWN', M, process, _, _} -> lost_writes(C)
    after Ms ->
        erlang:demonitor(M, [flush]),
        receive {M, _} -> ok
        after 0 ->
                atomics:put(C, 4, erlang:monotonic_time(millisecond) + ?DW_SLOW),
                deferred(C, Seq)
        end
    end.

%% Only the store server writes slots 3 and 4 (3 in increasing order).
deferred(C, Seq) ->
    atomics:put(C, 3, Seq),
    bump(dual_writes_deferred).

%% settle(Mod): before the store server reads or writes a Mnesia side
%% itself, the writes it deferred are applied. One atomics read when none
%% are queued.
settle(erlmcp_session_mnesia) ->
    case persistent_term:get(?PT_DW, undefined) of
        undefined -> ok;
        C ->
            case atomics:get(C, 1) - atomics:get(C, 2) of
                0 -> ok;
                _ -> settle_queue(C)
            end
    end;
settle(_) ->
    ok.

settle_queue(C) ->
    case whereis(?DW) of
        undefined -> lost_writes(C);
        W ->
            M = erlang:monitor(process, W, [{alias, reply_demonitor}]),
            W ! {?DW, M, sync},
            receive
                {M, _} -> ok;
                {'DOWN', M, process, _, _} -> lost_writes(C)
            end
    end.

%% @doc How many dual-writes this node has queued up to the last one it
%% acknowledged to the application before the Mnesia side applied it (0:
%% everything acknowledged is applied).
-spec dual_writes_pending() -> non_neg_integer().
dual_writes_pending() ->
    case persistent_term:get(?PT_DW, undefined) of
        undefined -> 0;
        C -> max(0, atomics:get(C, 3) - atomics:get(C, 2))
    end.

dw_counts() ->
    case persistent_term:get(?PT_DW, undefined) of
        undefined ->
            C = atomics:new(4, [{signed, true}]),
            %% monotonic time may be negative: "not slow" from now on.
            atomics:put(C, 4, erlang:monotonic_time(millisecond)),
            persistent_term:put(?PT_DW, C),
            C;
        C -> C
    end.

%% The writer of this node, started when first needed. It is not linked
%% to the store server (a crash of one must not take the other down); it
%% finishes its queue and ends when the server that started it ends.
dual_writer(C) ->
    case whereis(?DW) of
        W when is_pid(W) -> W;
        undefined ->
            lost_writes(C),
            %% The tables the writer updates belong to the store server
            %% (they live as long as what it acknowledged).
            _ = dw_deletes(),
            pending_deletes(),
            Server = self(),
            W = spawn(fun() ->
                              erlang:monitor(process, Server),
                              ?MODULE:dw_loop(C, Server)
                      end),
            try register(?DW, W) of
                true -> W
            catch error:badarg ->
                    exit(W, kill),
                    dual_writer(C)
            end
    end.

%% What was queued to a writer that is gone can no longer be applied: the
%% primary has it, the Mnesia side may not. Counted as failed dual-writes.
lost_writes(C) ->
    case atomics:get(C, 1) - atomics:get(C, 2) of
        N when N > 0 ->
            add(secondary_write_failures, N),
            atomics:add(C, 2, N),
            D = dw_deletes(),
            [pending_delete(Id) || {Id, _} <- ets:tab2list(D)],
            ets:delete_all_objects(D),
            logger:warning("hybrid session backend: ~p dual-writes to the Mnesia side were "
                           "lost with their writer; the primary has them", [N]);
        _ -> ok
    end.

%% @private
dw_loop(C, Server) ->
    receive
        {?DW, From, Op} ->
            dw_batch(C, [{From, Op} | dw_more(?DW_BATCH - 1)]),
            ?MODULE:dw_loop(C, Server);
        {'DOWN', _, process, Server, _} ->
            dw_drain(C)
    end.

dw_drain(C) ->
    case dw_more(?DW_BATCH) of
        [] -> ok;
        B -> dw_batch(C, B), dw_drain(C)
    end.

%% Up to N more queued requests, in queue order, without waiting; a sync
%% request ends the batch (everything before it is applied when it is
%% answered).
dw_more(0) -> [];
dw_more(N) ->
    receive
        {?DW, From, sync} -> [{From, sync}];
        {?DW, From, Op} -> [{From, Op} | dw_more(N - 1)]
    after 0 -> []
    end.

%% One batch of the queue, in order. Written one at a time with
%% sync_dirty, as the store server did, the writer applies no more writes
%% a second than the server used to make, and a backlog (the writes queued
%% while Mnesia held the table) need not drain under steady traffic: in a
%% run at 1.8M sessions on five nodes the Mnesia sides of four nodes were
%% still thousands of writes behind when the traffic stopped. So every
%% write of a batch but the last goes with async_dirty (it returns once
%% one replica, the local one if the node has one, applied it, and the
%% others receive it in order) and the last with sync_dirty (it returns
%% once every replica applied it; each replica's transaction manager takes
%% one sender's commits in order, so everything before it is applied there
%% too). A fenced node writes each in a transaction (see dw_write/2).
dw_batch(C, Batch) ->
    Writes = [W || {_, Op} = W <- Batch, Op =/= sync],
    Last = length(Writes),
    Mode = fun(_) when Last =:= 0 -> none;
              (I) -> case fenced() of
                         true -> transaction;
                         false when I =:= Last -> sync_dirty;
                         false -> async_dirty
                     end
           end,
    _ = lists:foldl(fun({From, Op}, I) -> dw_apply(Op, C, From, Mode(I)), I + 1 end, 1, Writes),
    [From ! {From, ok} || {From, sync} <- Batch],
    ok.

dw_apply(Op, C, From, Mode) ->
    F = case Op of
            {store, T, Rec} -> fun() -> mnesia:write(T, Rec, write) end;
            {delete, T, Id} -> fun() -> mnesia:delete(T, Id, write) end
        end,
    R = dw_write(Mode, F),
    %% The id tables belong to the store server: gone with it when the
    %% writer drains its queue after the server ended (the ids of a
    %% server's deletes end with it, as its pending deletes do).
    _ = (catch case {R, Op} of
                   {ok, {delete, _, Id1}} -> dw_deleted(Id1);
                   {ok, _} -> ok;
                   {{error, _}, {store, _, _}} -> bump(secondary_write_failures);
                   {{error, _}, {delete, _, Id1}} ->
                       bump(secondary_write_failures),
                       pending_delete(Id1),
                       dw_deleted(Id1)
               end),
    atomics:add(C, 2, 1),
    From =:= none orelse (From ! {From, R}),
    ok.

dw_deletes() ->
    case ets:whereis(?DW_DELETES) of
        undefined -> ets:new(?DW_DELETES, [set, public, named_table, {write_concurrency, true}]);
        T -> T
    end.

%% One queued delete of Id done: the entry goes with the last one (a
%% delete of Id queued meanwhile keeps it, delete_object matches 0 only).
dw_deleted(Id) ->
    case ets:update_counter(?DW_DELETES, Id, {2, -1}, {Id, 1}) of
        0 -> ets:delete_object(?DW_DELETES, {Id, 0});
        _ -> true
    end.

%% A fenced node's writes wait on the fence's table lock (see fast/2).
dw_write(transaction, F) ->
    try mnesia:transaction(F) of
        {atomic, _} -> ok;
        {aborted, R} -> {error, R}
    catch
        exit:R -> _ = erase(mnesia_activity_state), {error, R}
    end;
dw_write(Dirty, F) ->
    dirty(Dirty, F).

fenced() ->
    persistent_term:get(migctl_fence_until, 0) > erlang:system_time(millisecond).

%%% ------------------------------------------------------------ backfill

%% Request: {copy, forward | reverse, Cursor, Limit, DryRun[, Nodes]}
%%        | {prune, Cursor, Limit, DryRun[, Nodes]}   (reverse only: delete
%%          from the primary what the secondary no longer has, i.e. deletes
%%          made in phase3, and, given Nodes, what another node serves)
%% Cursor: start | opaque term from the previous reply.
%% Nodes: the migration's nodes. Given for a way back to per-node primaries
%%   (a DETS file on each node): each session goes back to the ONE node
%%   that serves it (owner/3), not to every node's file.
%% Reply: {ok, #{scanned, written, skipped, expired, deleted, next, done,
%%              turn_us, waiting}};
%%   skipped counts rows not copied because the target is newer or
%%   because another node owns them.
backfill({copy, Dir, Cursor, Limit, DryRun}, St) ->
    backfill({copy, Dir, Cursor, Limit, DryRun, []}, St);
backfill({prune, Cursor, Limit, DryRun}, St) ->
    backfill({prune, Cursor, Limit, DryRun, []}, St);
backfill({copy, Dir, Cursor, Limit, DryRun, Nodes}, St) when is_list(Nodes) ->
    case Dir of
        forward when not DryRun -> flush_pending_deletes(St);
        _ -> ok
    end,
    {SrcW, DstW} = case Dir of forward -> {p, s}; reverse -> {s, p} end,
    {SrcMod, SrcS} = side(SrcW, St),
    {DstMod, DstS} = side(DstW, St),
    {Rows, Next} = scan(kind(SrcMod), SrcS, Cursor, Limit),
    {Live, Expired} = live_rows(Rows, now_ms(), [], 0),
    Mine = case Dir of
               reverse -> mine(Live, St, Nodes);
               forward -> Live
           end,
    {W, Sk0} = copy_rows(kind(DstMod), DstS, Mine, DryRun),
    Sk = Sk0 + length(Live) - length(Mine),
    case DryRun of
        true -> ok;
        false -> add(backfill_written, W), add(backfill_skipped, Sk)
    end,
    {ok, #{scanned => length(Rows), written => W, skipped => Sk,
           expired => Expired, deleted => 0,
           next => Next, done => Next =:= done}};
backfill({prune, Cursor, Limit, DryRun, Nodes}, St) when is_list(Nodes) ->
    {PMod, PS} = side(p, St),
    {SMod, SS} = side(s, St),
    {Rows, Next} = scan(kind(PMod), PS, Cursor, Limit),
    Absent = [Id || {Id, _} <- Rows, raw_get(kind(SMod), SS, Id) =:= none],
    Ids = [Id || {Id, _} <- Rows] -- Absent,
    Elsewhere = case Nodes of
                    [_, _ | _] ->
                        Origins = origins(table(SS), Ids, Nodes),
                        [Id || Id <- Ids, maps:get(Id, Origins, node()) =/= node()];
                    _ -> []
                end,
    Gone = Absent ++ Elsewhere,
    case DryRun of
        true -> ok;
        false -> [raw_delete(kind(PMod), PS, Id) || Id <- Gone]
    end,
    {ok, #{scanned => length(Rows), written => 0, skipped => 0, expired => 0,
           deleted => length(Gone), next => Next, done => Next =:= done}};
backfill(Other, _) ->
    {error, {bad_request, Other}}.

%% mine(Rows, St, Nodes) -> the rows of the secondary (reverse) that this
%% node's primary is to hold. erlmcp keeps one DETS file per node with the
%% sessions that node serves, and reads only its own: a session copied
%% into every node's file would be served stale by the nodes that do not
%% serve it and, deleted through its own node later, copied back into
%% Mnesia by the next forward backfill from another node's file. The rule
%% (owner/3):
%%   1. the node whose process made the session's last change, as this
%%      node's change recorder (migctl_recorder, same library) saw it
%%      (a fetch is a change: the node that last served it);
%%   2. not recorded (untouched since the recorder's coverage began): the
%%      node(s) whose file holds it already, where it lived before phase3;
%%   3. recorded nowhere and held by no node (created in phase3 and not
%%      touched within the recorder's window): erlang:phash2(Id, N) over
%%      the sorted nodes.
%% One node alone (ETS -> DETS) or no Nodes: every row.
mine(Rows, _St, Nodes) when length(Nodes) < 2 -> Rows;
mine(Rows, St, Nodes0) ->
    Nodes = lists:usort(Nodes0),
    Me = node(),
    {PMod, PS} = side(p, St),
    {_, SS} = side(s, St),
    Origins = origins(table(SS), [Id || {Id, _} <- Rows], Nodes),
    {Known, Unknown} = lists:partition(fun({Id, _}) -> maps:is_key(Id, Origins) end, Rows),
    {Held, NotHeld} = lists:partition(fun({Id, _}) -> raw_get(kind(PMod), PS, Id) =/= none end, Unknown),
    ByHash = [R || {Id, _} = R <- NotHeld,
                   lists:nth(erlang:phash2(Id, length(Nodes)) + 1, Nodes) =:= Me],
    Others = held_elsewhere(table(PS), [Id || {Id, _} <- ByHash], Nodes -- [Me]),
    [R || {Id, _} = R <- Known, maps:get(Id, Origins) =:= Me]
        ++ Held
        ++ [R || {Id, _} = R <- ByHash, not lists:member(Id, Others)].

%% origins(Tab, Ids, Nodes) -> #{Id => Node}: the node of each recorded
%% last change, for the ids whose node is one of Nodes.
origins(_Tab, [], _Nodes) -> #{};
origins(Tab, Ids, Nodes) ->
    case catch migctl_recorder:lookup(Tab, Ids) of
        L when is_list(L) ->
            maps:from_list([{K, O} || {K, _Op, _Ms, O, _D} <- L, lists:member(O, Nodes)]);
        _ -> #{}
    end.

%% held_elsewhere(DetsTab, Ids, Others) -> the ids another node's file
%% holds (asked of those nodes' own copy of this module).
held_elsewhere(_T, [], _Others) -> [];
held_elsewhere(_T, _Ids, []) -> [];
held_elsewhere(T, Ids, Others) ->
    Rs = erpc:multicall(Others, ?MODULE, held, [T, Ids], 10000),
    lists:usort(lists:append(
      [case R of
           {ok, L} when is_list(L) -> L;
           Err -> throw({hybrid, {owner_check_failed, N, Err}})
       end || {N, R} <- lists:zip(Others, Rs)])).

%% @doc The ids of Ids that the DETS table T of this node holds (the
%% reverse backfill's ownership rule asks every node).
-spec held(atom(), [term()]) -> [term()].
held(T, Ids) ->
    [Id || Id <- Ids, dets:member(T, Id) =:= true].

%% live_rows(Rows, Now, [], 0) -> {Sessions not expired, Expired}: one
%% pass; rows that are not {binary(), map()} are neither.
live_rows([], _Now, Acc, E) -> {lists:reverse(Acc), E};
live_rows([{Id, S} = R | T], Now, Acc, E) when is_binary(Id), is_map(S) ->
    case is_expired(S, Now) of
        true -> live_rows(T, Now, Acc, E + 1);
        false -> live_rows(T, Now, [R | Acc], E)
    end;
live_rows([_ | T], Now, Acc, E) -> live_rows(T, Now, Acc, E).

%% scan(Kind, State, Cursor, Limit) -> {[{Id, Session}], Next | done}
scan(ets, #{table_name := T}, Cursor, Limit) ->
    First = case Cursor of start -> ets:first(T); {key, K} -> ets:next(T, K) end,
    ets_walk(T, First, Limit, []);
scan(dets, #{table_name := T}, Cursor, Limit) ->
    %% A DETS pass reads the file in its own order (dets:select chunks on a
    %% fixed table: sequential, fast), and that alone is not enough: between
    %% two batches the application inserts sessions, an insert rewrites a
    %% slot's objects elsewhere in the file, and the select continuation,
    %% which follows the file, then misses untouched objects even on a
    %% fixed table (measured in isolation: 1 to 5 of 1,500 in about every
    %% other pass; seen as a lost session in the zero-loss test). So the
    %% pass keeps the keys its traversal returns, and at its end, unless
    %% nothing at all was written since the fixation (then nothing moved
    %% and the traversal returned every row), lists every key in one turn
    %% of this server (the only writer: a snapshot; ~0.5 s per 100,000
    %% sessions) and reads the keys it did not return one batch at a time
    %% (dets:lookup_keys: their current values; a session deleted since is
    %% not there). Listing at the start instead cost the same on a quiet
    %% table too (the backfill benchmark: 0.82 of a plain copy); reading
    %% every row by key halved the rate (random reads), and a walk by
    %% dets:slot/2 costs a call per slot (90 s for a file opened with
    %% 1,048,576 slots holding 8,000 sessions). The fixation, the key
    %% tables and the touched set belong to this server, the only process
    %% that runs these batches, and end with the pass.
    case Cursor of
        start ->
            need_room(T),
            fix(T),
            returned_table(),
            %% Under a steady stream of inserts the traversal keeps meeting
            %% relocated objects and need not end (a test saw it run for
            %% minutes): past 1.5 times the size it stops, and the keys it
            %% has not returned are read by key.
            Size = case dets:info(T, size) of N when is_integer(N) -> N; _ -> 0 end,
            Budget = Size + Size div 2 + 1000,
            %% Small select chunks, several per batch: a batch is as many
            %% rows as migctl_migrate asks for this turn (fewer while the
            %% application's requests queue up), and the chunk size of a
            %% select continuation is fixed when the traversal starts.
            select_batch(T, dets:select(T, [{'_', [], ['$_']}], min(Limit, ?SEL_CHUNK)), Limit, Budget);
        {dsel, C, Budget} ->
            pass_state(T),
            ets:info(?BFKEYS, type) =:= set orelse throw({hybrid, {cursor, stale_cursor}}),
            case {C, Budget =< 0} of
                {eot, _} -> leftovers(T, Limit, complete);
                {_, true} -> leftovers(T, Limit, gave_up);
                {_, false} -> select_batch(T, select_next(C), Limit, Budget)
            end;
        {dkey, K} ->
            pass_state(T),
            key_batch(T, ets:next(?BFKEYS, K), Limit);
        {dslot, I} ->
            pass_state(T),
            slot_batch(T, ets:next(?BFKEYS, I), Limit, [], I);
        _ ->
            %% A cursor of a pass begun by an older version: start again
            %% (batches are idempotent).
            throw({hybrid, {cursor, stale_cursor}})
    end;
scan(mnesia, #{table_name := T}, Cursor, Limit) ->
    %% Keys in term order from the local replica: a cursor that survives
    %% anything (a crash of migctl, a restart of the node), at the price of
    %% listing the keys for every batch. Used for the reverse direction only.
    Keys = lists:sort(mnesia:dirty_all_keys(T)),
    After = case Cursor of
                start -> Keys;
                {key, K} -> lists:dropwhile(fun(X) -> X =< K end, Keys)
            end,
    {Batch, Rest} = lists:split(min(Limit, length(After)), After),
    Rows = [{Id, S} || Id <- Batch, [{_, _, S, _}] <- [mnesia:dirty_read(T, Id)]],
    Next = case Rest of
               [] -> done;
               _ -> {key, lists:last(Batch)}
           end,
    {Rows, Next};
scan(K, _, _, _) ->
    throw({hybrid, {unsupported_backend, K}}).

%% pass_state(T): the pass's fixation and listing are still this
%% server's; after a restart of the server they are gone (and the file may
%% have been reorganised unfixed): the pass starts again.
pass_state(T) ->
    (fixed_by_me(T) andalso ets:whereis(?BFKEYS) =/= undefined)
        orelse throw({hybrid, {cursor, pass_lost}}),
    case dets_room(T) of
        ok -> ok;
        Near -> end_pass(T), throw({hybrid, Near})
    end.

%% DETS's 2 GB limit: dets_utils:alloc/2 places nothing past 2^31 less the
%% 50 MB it keeps for its free lists (2,097,483,648 bytes). There an insert
%% fails inside the DETS server (no_more_space_on_file), which OTP 25
%% treats as a bug: the table answers errors from then on, its close
%% fails, and the repair on reopening needs a second file as large, which
%% fails the same way (measured: 1,425,606 sessions of 1 KB inserted one
%% by one, the file at 2.097 GB). A fixed table hands no space freed
%% during the fixation to new collections, so while a backfill pass holds
%% it every session created or deleted costs new space at the end of the
%% file. So a pass does not fix a file within the reserve of that limit
%% (migctl_node's dets_fix_reserve_bytes, 128 MiB by default) and ends,
%% letting go of the table, when the file grows into it: the backfill
%% stops with {dets_near_limit, FileSize, Max} before the application's
%% table breaks. migctl's agent applies the same rule to its own passes
%% (migctl_dets:room/1).
-define(DETS_LIMIT, 2097483648).
-define(FIX_RESERVE, 134217728).

dets_room(T) ->
    Reserve = case application:get_env(migctl_node, dets_fix_reserve_bytes) of
                  {ok, R} when is_integer(R), R >= 0 -> R;
                  _ -> ?FIX_RESERVE
              end,
    %% A stat of the file, not dets:info(T, file_size), which writes the
    %% server's cache of delayed writes first (see migctl_dets:room/1).
    case file_size(T) of
        Size when is_integer(Size), Size + Reserve > ?DETS_LIMIT -> {dets_near_limit, Size, max(0, ?DETS_LIMIT - Reserve)};
        _ -> ok
    end.

%% file_size(T): the size of T's file on disk, or undefined.
file_size(Tab) ->
    case dets:info(Tab, filename) of
        F when is_list(F) ->
            case file:read_file_info(F) of
                {ok, I} -> element(2, I);
                _ -> undefined
            end;
        _ -> undefined
    end.

need_room(T) ->
    case dets_room(T) of
        ok -> ok;
        Near -> throw({hybrid, Near})
    end.

%% returned_table(): ?BFKEYS, empty, for the keys the traversal returns.
returned_table() ->
    case ets:whereis(?BFKEYS) of
        undefined -> ok;
        _ -> ets:delete(?BFKEYS)
    end,
    _ = ets:new(?BFKEYS, [set, protected, named_table]),
    ok.

%% leftovers(T, Limit, How): the traversal is over (complete) or gave up.
%% With nothing written since the fixation it returned every row.
%% Otherwise it may have missed rows, and only rows of the slots whose
%% objects were rewritten since the fixation: DETS keeps the objects of a
%% hash slot together and rewrites them elsewhere in the file when one of
%% them is inserted or deleted, and the traversal follows the file; a
%% fixed table does not grow (dets_v9:may_grow/3), so every key keeps its
%% slot. Every such write went through this server and its key is in the
%% touched set: the slots of the touched keys are read again, one batch
%% at a time (dets:slot/2, current values), in as many turns as it takes.
%% The slot of a key is computed as dets_v9:db_hash/2 does (linear hashing
%% over phash2); the rule is checked on keys of the table first, and when
%% it does not hold (another hash method, another DETS), when the
%% traversal gave up, or when a cleanup deleted rows (their keys are not
%% recorded), every key is listed in one turn instead (list_leftovers/2):
%% ~0.5 s per 100,000 sessions, too long for the application's calls at
%% the 2 GB limit (erlmcp's clients give up after 5 s), so it is the
%% exception.
leftovers(T, Limit, How) ->
    case ets:info(?TOUCHED, size) of
        0 when How =:= complete ->
            end_pass(T),
            {[], done};
        _ ->
            case How =:= complete andalso touched_slots(T) of
                {ok, Slots} ->
                    add(backfill_slot_passes, 1),
                    ets:delete(?BFKEYS),
                    _ = ets:new(?BFKEYS, [ordered_set, protected, named_table]),
                    ets:insert(?BFKEYS, [{I} || I <- Slots]),
                    slot_batch(T, ets:first(?BFKEYS), Limit, [], none);
                _ ->
                    list_leftovers(T, Limit)
            end
    end.

%% touched_slots(T) -> {ok, [Slot]} | fallback.
touched_slots(T) ->
    case {dets:info(T, hash), dets:info(T, no_slots)} of
        {phash2, {_, Next, _}} when is_integer(Next), Next > 0 ->
            case ets:member(?TOUCHED, '$cleanup') of
                true -> fallback;
                false ->
                    M = pow2_floor(Next, 1),
                    case slot_rule_holds(T, M, Next) of
                        true ->
                            {ok, lists:usort([slot_of(K, M, Next) || {K} <- ets:tab2list(?TOUCHED)])};
                        false ->
                            logger:warning("hybrid session backend: the DETS slot rule does not "
                                           "hold for ~p; listing every key", [T]),
                            fallback
                    end
            end;
        _ -> fallback
    end.

%% As dets_v9:db_hash/2 for phash2: M is the largest power of two =< Next
%% (the slots in use), slots below Next - M have been split.
slot_of(Key, M, Next) ->
    H = erlang:phash2(Key),
    case H band (M - 1) of
        S when S < Next - M -> H band (2 * M - 1);
        S -> S
    end.

pow2_floor(N, P) when P * 2 =< N -> pow2_floor(N, P * 2);
pow2_floor(_, P) -> P.

%% The rule, checked on up to 16 keys the traversal returned that the
%% table still holds: each must be in the slot computed for it. None to
%% check (the table emptied): not trusted.
slot_rule_holds(T, M, Next) ->
    Ks = sample_keys(ets:first(?BFKEYS), 64, []),
    Held = lists:sublist([K || K <- Ks, dets:member(T, K) =:= true], 16),
    Held =/= [] andalso
        lists:all(fun(K) ->
                          case dets:slot(T, slot_of(K, M, Next)) of
                              Objs when is_list(Objs) -> lists:keymember(K, 1, Objs);
                              _ -> false
                          end
                  end, Held).

sample_keys('$end_of_table', _, Acc) -> Acc;
sample_keys(_, 0, Acc) -> Acc;
sample_keys(K, N, Acc) -> sample_keys(ets:next(?BFKEYS, K), N - 1, [K | Acc]).

%% slot_batch(T, From, Limit, Acc, Last) -> {Rows, {dslot, Last} | done}:
%% the current objects of the next Limit slots (at least one slot per row
%% counted) from From on.
slot_batch(T, '$end_of_table', _N, Acc, _Last) ->
    end_pass(T),
    {Acc, done};
slot_batch(_T, _I, N, Acc, Last) when N =< 0 ->
    {Acc, {dslot, Last}};
slot_batch(T, I, N, Acc, _Last) ->
    Objs = case dets:slot(T, I) of
               L when is_list(L) -> L;
               '$end_of_table' -> [];
               {error, E} -> end_pass(T), throw({hybrid, {cursor, E}})
           end,
    slot_batch(T, ets:next(?BFKEYS, I), N - max(1, length(Objs)), Objs ++ Acc, I).

%% list_leftovers(T, Limit): every key is listed now, in this server turn,
%% and ?BFKEYS becomes the keys the traversal did not return, read by key
%% from here on.
list_leftovers(T, Limit) ->
    add(backfill_key_listings, 1),
    Keys = case dets:select(T, [{{'$1', '_'}, [], ['$1']}]) of
               {error, E} -> end_pass(T), throw({hybrid, {cursor, E}});
               L -> L
           end,
    Left = [{K} || K <- Keys, not ets:member(?BFKEYS, K)],
    ets:delete(?BFKEYS),
    _ = ets:new(?BFKEYS, [ordered_set, protected, named_table]),
    ets:insert(?BFKEYS, Left),
    key_batch(T, ets:first(?BFKEYS), Limit).

select_next(C) ->
    try dets:select(C) catch error:badarg -> {error, stale_cursor} end.

%% select_batch(T, SelectResult, Limit, Budget): a batch of the traversal,
%% chunks until Limit rows; at its end, what it may have missed
%% (leftovers/3).
select_batch(T, R, Limit, Budget) ->
    select_batch(T, R, Limit, Budget, [], 0).

select_batch(T, '$end_of_table', Limit, _Budget, [], _N) ->
    leftovers(T, Limit, complete);
select_batch(_T, '$end_of_table', _Limit, _Budget, Acc, _N) ->
    %% The rows of this batch first; the leftovers in the next turn.
    {lists:append(lists:reverse(Acc)), {dsel, eot, 0}};
select_batch(T, R, Limit, Budget, Acc, N) ->
    {Rows, Next} = select_chunk(T, R, Budget),
    N1 = N + length(Rows),
    case Next of
        {dsel, C1, B1} when N1 < Limit, B1 > 0 ->
            select_batch(T, select_next(C1), Limit, B1, [Rows | Acc], N1);
        _ ->
            {lists:append(lists:reverse([Rows | Acc])), Next}
    end.

%% select_chunk(T, SelectResult, Budget) -> {Rows, {dsel, C, Budget1}}: one
%% chunk of the traversal, stale rows read again.
select_chunk(T, R, Budget) ->
    case R of
        {error, E} ->
            end_pass(T), throw({hybrid, {cursor, E}});
        {Rows, C1} ->
            %% A fixed DETS table's traversal also returns objects deleted
            %% or replaced after the fixation (measured: 89 of 4898 deleted
            %% rows came back). Every session the application touched since
            %% the fixation is in the touched set: those are read again,
            %% now, in this same server turn; the others cannot be stale.
            Next = {dsel, C1, Budget - length(Rows)},
            case ets:whereis(?TOUCHED) of
                Touched when Touched =/= undefined ->
                    case ets:info(Touched, size) of
                        0 ->
                            %% Nothing written since the fixation: the
                            %% rows are the file's, once each, as they are.
                            ets:insert(?BFKEYS, [{Id} || {Id, _} <- Rows]),
                            {Rows, Next};
                        _ ->
                            Fresh = maps:from_list(
                                      [case ets:member(Touched, Id) of
                                           true -> {Id, dets:lookup(T, Id)};
                                           false -> {Id, [Row]}
                                       end || {Id, _} = Row <- Rows]),
                            ets:insert(?BFKEYS, [{Id} || Id <- maps:keys(Fresh)]),
                            {[{Id, S} || {Id, [{_, S}]} <- maps:to_list(Fresh)], Next}
                    end;
                undefined ->
                    end_pass(T), throw({hybrid, {cursor, pass_lost}})
            end
    end.

%% key_batch(T, From, Limit) -> {Rows, {dkey, Last} | done}: the current
%% rows of the next Limit left-over keys from From on.
key_batch(T, From, Limit) ->
    {Keys, Next} = take_keys(From, Limit, []),
    Rows = read_keys(T, Keys),
    case Next of
        done -> end_pass(T), {Rows, done};
        _ -> {Rows, Next}
    end.

%% dets:lookup_keys/2 (exported, what qlc uses for DETS tables) reads a
%% batch in one call, sorted by file position: 2.3x faster than a lookup
%% per key (100,000 sessions: 1.6 s vs 3.7 s). One lookup per key if it
%% is not there.
read_keys(_T, []) -> [];
read_keys(T, Keys) ->
    case catch dets:lookup_keys(T, Keys) of
        Objs when is_list(Objs) -> Objs;
        {error, E} -> end_pass(T), throw({hybrid, {cursor, E}});
        {'EXIT', _} ->
            lists:append([case dets:lookup(T, Id) of
                              L when is_list(L) -> L;
                              {error, E} -> end_pass(T), throw({hybrid, {cursor, E}})
                          end || Id <- Keys])
    end.

take_keys('$end_of_table', _, Acc) -> {lists:reverse(Acc), done};
take_keys(_, 0, Acc = [Last | _]) -> {lists:reverse(Acc), {dkey, Last}};
take_keys(K, N, Acc) -> take_keys(ets:next(?BFKEYS, K), N - 1, [K | Acc]).

end_pass(T) ->
    case ets:whereis(?BFKEYS) of
        undefined -> ok;
        _ -> ets:delete(?BFKEYS)
    end,
    unfix(T).

%% The touched set exists while a DETS pass is in progress; it belongs to
%% the store server, like the fixation, so both end together.
touch(Id) ->
    watch_note(Id),
    case ets:whereis(?TOUCHED) of
        undefined -> ok;
        Tab -> ets:insert(Tab, {Id})
    end.

fix(T) ->
    case ets:whereis(?TOUCHED) of
        undefined -> ets:new(?TOUCHED, [set, public, named_table, {write_concurrency, true}]);
        _ -> ok
    end,
    case fixed_by_me(T) of
        true -> ok;
        false -> dets:safe_fixtable(T, true)
    end.

fixed_by_me(T) ->
    case dets:info(T, safe_fixed) of
        {_, Fixers} when is_list(Fixers) -> lists:keymember(self(), 1, Fixers);
        _ -> false
    end.

unfix(T) ->
    case ets:whereis(?TOUCHED) of
        undefined -> ok;
        _ -> ets:delete(?TOUCHED)
    end,
    case dets:info(T, safe_fixed) of
        {_, Fixers} when is_list(Fixers) ->
            [dets:safe_fixtable(T, false) || {P, N} <- Fixers, P =:= self(),
                                             _ <- lists:seq(1, N)],
            ok;
        _ -> ok
    end.

%% Secondary deletes that failed in phase1: the primary no longer has the
%% session, the secondary still does, and a copy never removes anything.
%% Kept in an ETS table of the store server (lost if it restarts, like the
%% counters' meaning; migctl's phase2 gate refuses after any secondary
%% write failure since the backfill started anyway).
pending_delete(Id) ->
    ets:insert(pending_deletes(), {Id}).

pending_deletes() ->
    case ets:whereis(?PENDING) of
        undefined -> ets:new(?PENDING, [set, public, named_table]);
        Tab -> Tab
    end.

flush_pending_deletes(St) ->
    case ets:whereis(?PENDING) of
        undefined -> ok;
        T ->
            {PMod, PS} = side(p, St),
            {SMod, SS} = side(s, St),
            [begin
                 case raw_get(kind(PMod), PS, Id) of
                     none -> raw_delete(kind(SMod), SS, Id);
                     _ -> ok
                 end,
                 ets:delete(T, Id)
             end || {Id} <- ets:tab2list(T)],
            ok
    end.

ets_walk(_T, '$end_of_table', _N, Acc) -> {lists:reverse(Acc), done};
ets_walk(_T, _K, 0, Acc = [{Last, _} | _]) -> {lists:reverse(Acc), {key, Last}};
ets_walk(T, K, N, Acc) ->
    Acc1 = case ets:lookup(T, K) of
               [{_, S}] -> [{K, S} | Acc];
               [] -> Acc
           end,
    ets_walk(T, ets:next(T, K), N - 1, Acc1).

%% Whether a source row replaces what the target holds: when the target has
%% none, when the source was accessed later, or when both carry the same
%% last_accessed but differ (the source is the side the application
%% reads, so it is authoritative then). Never when the target is newer.
newer(_S, none) -> true;
newer(S, {ok, T}) ->
    LS = maps:get(last_accessed, S, 0),
    LT = case is_map(T) of true -> maps:get(last_accessed, T, 0); false -> 0 end,
    LS > LT orelse (LS =:= LT andalso S =/= T).

%% copy_rows(Kind, State, Rows, DryRun) -> {Written, Skipped}. A row copied
%% into Mnesia carries the write time in its last field, as erlmcp's
%% store/3 writes it (not the session's last_accessed, which only decides
%% whether the row is copied, see newer/2).
copy_rows(_, _, [], _) ->
    {0, 0};
copy_rows(mnesia, #{table_name := T}, Rows, DryRun) ->
    F = fun() ->
                ok = mnesia:write_lock_table(T),
                lists:foldl(
                  fun({Id, S}, {W, Sk}) ->
                          Have = case mnesia:read(T, Id, write) of
                                     [{_, _, X, _}] -> {ok, X};
                                     [] -> none
                                 end,
                          case newer(S, Have) of
                              true when DryRun -> {W + 1, Sk};
                              true ->
                                  ok = mnesia:write(T, {T, Id, S, now_ms()}, write),
                                  {W + 1, Sk};
                              false -> {W, Sk + 1}
                          end
                  end, {0, 0}, Rows)
        end,
    %% The batch runs in the store server: every application call of the
    %% node waits while it waits for the table lock. Other nodes' store
    %% servers can hold row locks for minutes (erlmcp's Mnesia cleanup
    %% deletes every expired session in one transaction, on every node at
    %% once: 230k sessions expiring together stalled node 1's server for
    %% minutes in migctl's big run). So the batch takes at most
    %% ?COPY_TRIES tries (Mnesia restarts a transaction that loses a lock
    %% conflict) and then gives up with lock_conflict, leaving the server
    %% to the application; migctl tries the batch again after a pause.
    case mnesia:transaction(F, ?COPY_TRIES) of
        {atomic, R} -> R;
        {aborted, nomore} -> throw({hybrid, lock_conflict});
        {aborted, R} -> throw({hybrid, {mnesia, R}})
    end;
copy_rows(K, St, Rows, DryRun) when K =:= ets; K =:= dets ->
    Win = [R || R = {Id, S} <- Rows, newer(S, raw_get(K, St, Id))],
    case DryRun of
        true -> ok;
        false -> raw_put(K, St, Win)
    end,
    {length(Win), length(Rows) - length(Win)};
copy_rows(K, _, _, _) ->
    throw({hybrid, {unsupported_backend, K}}).

raw_get(ets, #{table_name := T}, Id) ->
    case ets:lookup(T, Id) of [{_, S}] -> {ok, S}; [] -> none end;
raw_get(dets, #{table_name := T}, Id) ->
    case dets:lookup(T, Id) of
        [{_, S}] -> {ok, S};
        [] -> none;
        {error, R} -> throw({hybrid, {dets, R}})
    end;
raw_get(mnesia, #{table_name := T}, Id) ->
    case mnesia:dirty_read(T, Id) of [{_, _, S, _}] -> {ok, S}; [] -> none end.

raw_put(_, _, []) -> ok;
raw_put(ets, #{table_name := T}, Rows) -> true = ets:insert(T, Rows), ok;
raw_put(dets, #{table_name := T}, Rows) when length(Rows) > ?DETS_INSERT ->
    %% In requests of ?DETS_INSERT: DETS grows its hash table by at most
    %% 512 slots a write request, so a bigger request of new keys (the way
    %% back's batches into the DETS file) leaves it with fewer slots than
    %% keys, and it catches up in one stretch the next time the table is
    %% unfixed, a segment at a time between the application's requests
    %% (~100 s at 1.8M sessions in migctl's big run, with client timeouts).
    {H, Rest} = lists:split(?DETS_INSERT, Rows),
    raw_put(dets, #{table_name => T}, H),
    raw_put(dets, #{table_name => T}, Rest);
raw_put(dets, #{table_name := T}, Rows) ->
    case dets:insert(T, Rows) of
        ok -> ok;
        {error, R} -> throw({hybrid, {dets, R}})
    end.

raw_delete(ets, #{table_name := T}, Id) -> ets:delete(T, Id);
raw_delete(dets, #{table_name := T}, Id) -> dets:delete(T, Id);
raw_delete(mnesia, #{table_name := T}, Id) ->
    {atomic, ok} = mnesia:transaction(fun() -> mnesia:delete(T, Id, write) end).

%%% ------------------------------------------------------------ helpers

%% guard(F): a call into a side's backend module that cannot raise. erlmcp's
%% store server does not catch what its backend raises: an exception here
%% would kill it (and, restarted too often, the application). Mnesia raises
%% out of mnesia:transaction when it stops under a running transaction
%% (migctl's heal restarts Mnesia on the nodes it reloads), and leaves that
%% transaction in the process dictionary, where the next transaction on the
%% restarted Mnesia would be taken for a nested one of the dead one (and
%% crash Mnesia's transaction manager). The store server is never inside a
%% transaction between two requests, so whatever is left there is stale.
guard(F) ->
    try F()
    catch
        Class:Reason ->
            _ = erase(mnesia_activity_state),
            logger:warning("hybrid session backend: ~p:~0P", [Class, Reason, 20]),
            {error, {crashed, Class, Reason}}
    end.

%% await_mnesia(Ms): Mnesia is starting (a restart by migctl's heal, or the
%% node boots): wait for it rather than fail the store server's start, or,
%% worse, decide that the phase lives in the file of a node without Mnesia.
await_mnesia(Ms) when Ms =< 0 -> ok;
await_mnesia(Ms) ->
    case mnesia:system_info(is_running) of
        yes -> ok;
        no -> ok;
        _ -> timer:sleep(100), await_mnesia(Ms - 100)
    end.

kind(erlmcp_session_ets) -> ets;
kind(erlmcp_session_dets) -> dets;
kind(erlmcp_session_mnesia) -> mnesia;
kind(M) -> M.

table(#{table_name := T}) -> T;
table(_) -> undefined.

required(K, Opts) ->
    case maps:find(K, Opts) of
        {ok, M} when is_atom(M) -> M;
        _ -> throw({hybrid, {missing_option, K}})
    end.

ensure_counters() ->
    case persistent_term:get(?PT_CTR, undefined) of
        undefined -> new_counters();
        C ->
            %% A newer version of this module (loaded into a running
            %% node) may count more: a larger array, the old values kept.
            case counters:info(C) of
                #{size := N} when N >= length(?COUNTERS) -> C;
                #{size := N} ->
                    C1 = new_counters(),
                    [counters:put(C1, I, counters:get(C, I)) || I <- lists:seq(1, N)],
                    C1
            end
    end.

new_counters() ->
    C = counters:new(length(?COUNTERS), [write_concurrency]),
    persistent_term:put(?PT_CTR, C),
    C.

bump(Name) -> add(Name, 1).

add(Name, N) ->
    counters:add(ensure_counters(), index(Name, ?COUNTERS, 1), N).

index(N, [N | _], I) -> I;
index(N, [_ | T], I) -> index(N, T, I + 1).

to_list(B) when is_binary(B) -> binary_to_list(B);
to_list(A) when is_atom(A) -> atom_to_list(A);
to_list(L) when is_list(L) -> L.

%%% ------------------------------------------------------------ persistence watch
%%
%% `migctl verify persistence' restarts the node and then judges every
%% session the application's clients did not touch in the meantime: it must
%% be back, with the same value. To know which sessions were touched, migctl
%% turns this watch on before its first snapshot. From then on touch/1 (every
%% store, fetch and delete, and a cleanup that deleted something, as the id
%% '$cleanup') records the id in a DETS file next to the data,
%% DIR/migctl_touched.dets (DIR: dets_dir, else the folder of the DETS
%% side's file), once per id: an ETS set of the ids already recorded turns
%% repeats into one insert_new. A graceful restart closes the file with the
%% store server; init/1 reopens it (watch_resume/3) and the watch goes on
%% recording across the restart, until migctl has taken its last snapshot,
%% read the set and turned the watch off (the file is deleted).
%%
%% Requests come through the store server's fetch door, as the backfill's
%% do (erlmcp's server forwards nothing else): a fetch of the id
%% {migctl_persist, Req} answers {ok, {migctl_persist_reply, Reply}}.
%%   {watch_on, Token, TtlMs}  a new watch (any other one ends) -> {ok, #{file, since, until}}
%%   {touched, Token}          -> {ok, #{on => true, ids, since, until, unclean, resumed}}
%%                              | {ok, #{on => false, ended => Why}}
%%   {keys, DetsTab}           every key of the table, listed in this one
%%                             turn of the server (no application write in
%%                             between: exact) -> {ok, #{keys, at}}
%%   {watch_off, Token | any}  -> {ok, #{stopped => boolean()}}
%% `resumed': an init reopened the watch since it began (the store server
%% did restart). `unclean': the file was not closed properly (the node was killed, not
%% stopped): DETS repaired it, and ids recorded in the last seconds before
%% the kill may be missing.
%%
%% Cost: off, one persistent_term lookup per operation; on, one ETS
%% insert_new per operation and one DETS insert per id touched for the
%% first time. The watch ends by itself TtlMs after it began (a migctl that
%% died half-way leaves nothing running for long); a failure to record ends
%% it too, and migctl is told (ended => failed) rather than given a set that
%% misses ids.

-define(PT_WATCH, {?MODULE, persist_watch}).          % Until (ms) while on
-define(PT_WATCH_FILE, {?MODULE, persist_watch_file}).
-define(PT_WATCH_END, {?MODULE, persist_watch_end}).  % why the last one ended
-define(PT_WATCH_RESUMED, {?MODULE, persist_watch_resumed}). % reopened by an init
-define(WATCH_TAB, migctl_persist_touched).           % the DETS file
-define(WATCH_SEEN, migctl_persist_seen).             % ETS: ids already recorded
-define(WATCH_MARK, '$migctl_watch').
-define(WATCH_UNCLEAN, '$migctl_unclean').

watch_request(Req) ->
    try watch_req(Req)
    catch
        throw:{hybrid, R} -> {error, R};
        C:R -> {error, iolist_to_binary(io_lib:format("~p:~0P", [C, R, 20]))}
    end.

watch_req({watch_on, Token, TtlMs}) when is_integer(TtlMs), TtlMs > 0 ->
    File = watch_file(),
    watch_stop(replaced),
    _ = file:delete(File),
    ok = filelib:ensure_dir(File),
    case dets:open_file(?WATCH_TAB, [{file, File}, {type, set}]) of
        {ok, _} -> ok;
        {error, R} -> throw({hybrid, {watch_file, R}})
    end,
    Now = now_ms(),
    Until = Now + TtlMs,
    ok = dets:insert(?WATCH_TAB, {?WATCH_MARK, Token, Now, Until}),
    ok = dets:sync(?WATCH_TAB),
    watch_seen([]),
    persistent_term:put(?PT_WATCH_RESUMED, false),
    persistent_term:put(?PT_WATCH, Until),
    {ok, #{file => unicode:characters_to_binary(File), since => Now, until => Until}};
watch_req({touched, Token}) ->
    case watch_marker() of
        {Token, Since, Until} ->
            case dets:select(?WATCH_TAB, [{{'$1'}, [], ['$1']}]) of
                Ids when is_list(Ids) ->
                    Unclean = dets:member(?WATCH_TAB, ?WATCH_UNCLEAN) =:= true,
                    {ok, #{on => true, ids => Ids, since => Since, until => Until,
                           unclean => Unclean,
                           resumed => persistent_term:get(?PT_WATCH_RESUMED, false)}};
                {error, R} -> throw({hybrid, {watch_file, R}})
            end;
        {_Other, _, _} -> {ok, #{on => false, ended => replaced}};
        none -> {ok, #{on => false, ended => persistent_term:get(?PT_WATCH_END, none)}}
    end;
watch_req({keys, Tab}) when is_atom(Tab) ->
    case dets:info(Tab, size) of
        undefined -> {error, {dets_not_open, Tab}};
        _ ->
            case dets:select(Tab, [{{'$1', '_'}, [], ['$1']}]) of
                Keys when is_list(Keys) -> {ok, #{keys => Keys, at => now_ms()}};
                {error, R} -> {error, {dets, R}}
            end
    end;
watch_req({watch_off, Token}) ->
    case watch_marker() of
        {T, _, _} when T =:= Token; Token =:= any -> watch_stop(off), {ok, #{stopped => true}};
        _ -> {ok, #{stopped => false}}
    end;
watch_req(Other) ->
    {error, {bad_request, Other}}.

%% watch_marker() -> {Token, Since, Until} | none: the watch on now (an
%% expired one ends here).
watch_marker() ->
    case persistent_term:get(?PT_WATCH, undefined) of
        undefined -> none;
        Until ->
            case now_ms() > Until of
                true -> watch_stop(expired), none;
                false ->
                    case catch dets:lookup(?WATCH_TAB, ?WATCH_MARK) of
                        [{_, Token, Since, Until}] -> {Token, Since, Until};
                        _ -> watch_stop(failed), none
                    end
            end
    end.

%% watch_note(Id): called by touch/1 for every store, fetch and delete.
watch_note(Id) ->
    case persistent_term:get(?PT_WATCH, undefined) of
        undefined -> ok;
        Until ->
            %% Never raises into the store server: a failure ends the
            %% watch (migctl then reads ended => failed).
            try
                case ets:insert_new(?WATCH_SEEN, {Id}) of
                    false -> ok;
                    true ->
                        case now_ms() > Until of
                            true -> watch_stop(expired);
                            false -> ok = dets:insert(?WATCH_TAB, {Id})
                        end
                end
            catch
                _:_ -> watch_stop(failed)
            end
    end.

%% watch_stop(Why): the watch ends; its file goes.
watch_stop(Why) ->
    persistent_term:get(?PT_WATCH, undefined) =:= undefined
        orelse logger:notice("hybrid session backend: persistence watch ended (~p)", [Why]),
    _ = persistent_term:erase(?PT_WATCH),
    persistent_term:put(?PT_WATCH_END, Why),
    _ = (catch ets:delete(?WATCH_SEEN)),
    File = case catch dets:info(?WATCH_TAB, filename) of
               F when is_list(F) -> F;
               _ -> undefined
           end,
    _ = (catch dets:close(?WATCH_TAB)),
    _ = is_list(File) andalso file:delete(File),
    ok.

watch_seen(Ids) ->
    _ = (catch ets:delete(?WATCH_SEEN)),
    _ = ets:new(?WATCH_SEEN, [set, public, named_table]),
    true = ets:insert(?WATCH_SEEN, [{Id} || Id <- Ids]),
    ok.

watch_file() ->
    case persistent_term:get(?PT_WATCH_FILE, undefined) of
        undefined -> throw({hybrid, no_watch_file});
        F -> F
    end.

%% watch_resume(PS, SS, Opts): at init, the watch a restart interrupted goes
%% on (its file is there); never fails the init.
watch_resume(PS, SS, Opts) ->
    Dir = case maps:find(dets_dir, Opts) of
              {ok, D} -> to_list(D);
              error ->
                  case [F || S <- [PS, SS], is_map(S), {ok, F} <- [maps:find(file_path, S)]] of
                      [F | _] -> filename:dirname(to_list(F));
                      [] -> "."
                  end
          end,
    File = filename:join(Dir, "migctl_touched.dets"),
    persistent_term:put(?PT_WATCH_FILE, File),
    case persistent_term:get(?PT_WATCH, undefined) =/= undefined andalso
        ets:whereis(?WATCH_SEEN) =/= undefined of
        true -> ok;   % a second instance (migctl's latency bench): the watch runs
        false ->
            _ = persistent_term:erase(?PT_WATCH),
            try
                filelib:is_regular(File) andalso watch_reopen(File)
            catch
                C:R ->
                    logger:warning("hybrid session backend: persistence watch ~s: ~p:~0P",
                                   [File, C, R, 20]),
                    watch_stop(failed)
            end
    end,
    ok.

watch_reopen(File) ->
    Unclean = case dets:open_file(?WATCH_TAB, [{file, File}, {type, set}, {repair, false}]) of
                  {ok, _} -> false;
                  {error, {needs_repair, _}} ->
                      {ok, _} = dets:open_file(?WATCH_TAB, [{file, File}, {type, set}]),
                      true
              end,
    case dets:lookup(?WATCH_TAB, ?WATCH_MARK) of
        [{_, _Token, _Since, Until}] ->
            case now_ms() > Until of
                true -> watch_stop(expired);
                false ->
                    _ = Unclean andalso dets:insert(?WATCH_TAB, {?WATCH_UNCLEAN, now_ms()}),
                    Ids = dets:select(?WATCH_TAB, [{{'$1'}, [], ['$1']}]),
                    watch_seen(Ids),
                    persistent_term:put(?PT_WATCH_RESUMED, true),
                    persistent_term:put(?PT_WATCH, Until),
                    logger:notice("hybrid session backend: persistence watch goes on (~b ids recorded~s)",
                                  [length(Ids), case Unclean of true -> ", file repaired"; false -> "" end])
            end;
        _ -> watch_stop(failed)
    end.
