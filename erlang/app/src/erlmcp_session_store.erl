%% @doc The session store server: holds one backend's state and calls it
%% through the erlmcp_session_backend behaviour (erlmcp's
%% erlmcp_session_backend gen_server, minus its OTP 28 extras).
%%
%% Configuration (application env of erlmcp_fixture, read at start; the
%% same keys in erlmcp's own block, erlmcp_core, win, so the runbook's
%% sys.config works unchanged):
%%   session_backend           backend module (default erlmcp_session_ets)
%%   backend_opts              map (or proplist) passed to Backend:init/1
%%   session_cleanup_interval  ms between cleanup_expired runs, or infinity
%%                             (default 60000; `cleanup_interval' also read)
%%   dets_dir, mnesia_nodes, migration_phase, primary_backend,
%%   secondary_backend         the runbook's keys; each one that is set is
%%                             added to the backend options (backend_opts
%%                             wins), so a hybrid backend sees them all.
%%
%% Cleanup runs in a separate process so a long scan does not block
%% requests; the state it returns is discarded (the bundled backends do not
%% change their state there).
-module(erlmcp_session_store).
-behaviour(gen_server).

-export([start_link/0, store/2, fetch/1, delete/1, list/0, cleanup_expired/0,
         new_session/1, new_session/2, reconfigure/2, info/0, config/0]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2]).

-define(TIMEOUT, 5000).
-define(RUNBOOK_KEYS, [dets_dir, mnesia_nodes, migration_phase, migration_percent,
                       primary_backend, secondary_backend, primary_opts, secondary_opts]).

%%% API

start_link() ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, [], [{hibernate_after, 30000}]).

-spec store(binary(), map()) -> ok | {error, term()}.
store(Id, Session) -> gen_server:call(?MODULE, {store, Id, Session}, ?TIMEOUT).

-spec fetch(binary()) -> {ok, map()} | {error, not_found | term()}.
fetch(Id) -> gen_server:call(?MODULE, {fetch, Id}, ?TIMEOUT).

-spec delete(binary()) -> ok | {error, term()}.
delete(Id) -> gen_server:call(?MODULE, {delete, Id}, ?TIMEOUT).

-spec list() -> {ok, [binary()]} | {error, term()}.
list() -> gen_server:call(?MODULE, list, ?TIMEOUT).

%% @doc Runs the backend's cleanup_expired/1 now, in the server.
-spec cleanup_expired() -> {ok, non_neg_integer()} | {error, term()}.
cleanup_expired() -> gen_server:call(?MODULE, cleanup_expired, 60000).

%% @doc An erlmcp-shaped session with a one-hour timeout (not stored).
new_session(Metadata) -> new_session(Metadata, 3600000).

new_session(Metadata, TimeoutMs) when is_map(Metadata) ->
    Now = erlang:system_time(millisecond),
    #{id => binary:encode_hex(crypto:strong_rand_bytes(16)),
      created_at => Now,
      last_accessed => Now,
      timeout_ms => TimeoutMs,
      metadata => Metadata}.

%% @doc Switches to another backend at run time. The new backend is
%% initialised first; on error the old one stays. The old backend's tables
%% stay open (an ETS or DETS table opened by this server lives as long as
%% the server), so its data can still be read and copied.
-spec reconfigure(module(), map()) -> ok | {error, term()}.
reconfigure(Backend, Opts) when is_atom(Backend), is_map(Opts) ->
    gen_server:call(?MODULE, {reconfigure, Backend, Opts}, 60000).

%% @doc The backend module, its options and the cleanup interval in use.
-spec info() -> #{backend := module(), opts := map(), cleanup_interval := timeout()}.
info() -> gen_server:call(?MODULE, info, ?TIMEOUT).

%% @doc {Backend, Opts, CleanupInterval} from the application environment:
%% erlmcp's own block (`erlmcp_core', as the runbook writes it) wins for
%% every key it sets, then erlmcp_fixture's.
config() ->
    Backend = env(session_backend, erlmcp_session_ets),
    Opts0 = to_map(env(backend_opts, #{})),
    Opts = lists:foldl(
             fun(K, Acc) ->
                     case env_find(K) of
                         {ok, V} -> maps:merge(#{K => V}, Acc);
                         undefined -> Acc
                     end
             end, Opts0, ?RUNBOOK_KEYS),
    Interval = env(session_cleanup_interval, env(cleanup_interval, 60000)),
    {Backend, Opts, Interval}.

%%% gen_server

init([]) ->
    process_flag(trap_exit, true),
    {Backend, Opts, Interval} = config(),
    case init_backend(Backend, Opts) of
        {ok, BState} ->
            {ok, schedule(#{backend => Backend, bstate => BState, opts => Opts,
                            interval => Interval, timer => undefined,
                            cleaner => undefined})};
        {error, Reason} ->
            {stop, {backend_init_failed, Backend, Reason}}
    end.

handle_call({store, Id, Session}, _From, S = #{backend := B, bstate := BS}) ->
    case call(B, store, [Id, Session, BS]) of
        {ok, BS1} -> {reply, ok, S#{bstate := BS1}};
        {error, Reason} -> {reply, {error, Reason}, S};
        {error, Reason, BS1} -> {reply, {error, Reason}, S#{bstate := BS1}}
    end;
handle_call({fetch, Id}, _From, S = #{backend := B, bstate := BS}) ->
    case call(B, fetch, [Id, BS]) of
        {ok, Session, BS1} -> {reply, {ok, Session}, S#{bstate := BS1}};
        {error, Reason, BS1} -> {reply, {error, Reason}, S#{bstate := BS1}};
        {error, Reason} -> {reply, {error, Reason}, S}
    end;
handle_call({delete, Id}, _From, S = #{backend := B, bstate := BS}) ->
    case call(B, delete, [Id, BS]) of
        {ok, BS1} -> {reply, ok, S#{bstate := BS1}};
        {error, Reason, BS1} -> {reply, {error, Reason}, S#{bstate := BS1}};
        {error, Reason} -> {reply, {error, Reason}, S}
    end;
handle_call(list, _From, S = #{backend := B, bstate := BS}) ->
    case call(B, list, [BS]) of
        {ok, Ids, BS1} -> {reply, {ok, Ids}, S#{bstate := BS1}};
        {error, Reason, BS1} -> {reply, {error, Reason}, S#{bstate := BS1}};
        {error, Reason} -> {reply, {error, Reason}, S}
    end;
handle_call(cleanup_expired, _From, S = #{backend := B, bstate := BS}) ->
    case call(B, cleanup_expired, [BS]) of
        {ok, N, BS1} -> {reply, {ok, N}, S#{bstate := BS1}};
        {error, Reason} -> {reply, {error, Reason}, S}
    end;
handle_call({reconfigure, Backend, Opts}, _From, S = #{backend := Old, bstate := OldBS}) ->
    case init_backend(Backend, Opts) of
        {ok, BS} ->
            _ = maybe_terminate(Old, reconfigure, OldBS),
            logger:notice("erlmcp_session_store: backend ~p -> ~p", [Old, Backend]),
            {reply, ok, S#{backend := Backend, bstate := BS, opts := Opts}};
        {error, Reason} ->
            {reply, {error, Reason}, S}
    end;
handle_call(info, _From, S = #{backend := B, opts := O, interval := I}) ->
    {reply, #{backend => B, opts => O, cleanup_interval => I}, S};
handle_call(_Req, _From, S) ->
    {reply, {error, unknown_request}, S}.

handle_cast(_Msg, S) ->
    {noreply, S}.

handle_info(cleanup_expired, S = #{cleaner := undefined, backend := B, bstate := BS}) ->
    {Pid, _} = spawn_monitor(
                 fun() ->
                         case call(B, cleanup_expired, [BS]) of
                             {ok, N, _} when N > 0 ->
                                 logger:debug("Session cleanup removed ~p expired sessions", [N]);
                             _ -> ok
                         end
                 end),
    {noreply, schedule(S#{cleaner := Pid, timer := undefined})};
handle_info(cleanup_expired, S) ->
    %% The previous run is still going: skip this one.
    {noreply, schedule(S#{timer := undefined})};
handle_info({'DOWN', _, process, Pid, _}, S = #{cleaner := Pid}) ->
    {noreply, S#{cleaner := undefined}};
handle_info({'EXIT', _, normal}, S) ->
    {noreply, S};
handle_info(Msg, S = #{backend := B, bstate := BS}) ->
    case erlang:function_exported(B, handle_info, 2) of
        true ->
            case call(B, handle_info, [Msg, BS]) of
                {ok, BS1} -> {noreply, S#{bstate := BS1}};
                _ -> {noreply, S}
            end;
        false ->
            {noreply, S}
    end.

terminate(Reason, #{backend := B, bstate := BS}) ->
    _ = maybe_terminate(B, Reason, BS),
    close_own_dets(),
    ok.

%%% internal

init_backend(Backend, Opts) ->
    case code:ensure_loaded(Backend) of
        {module, Backend} ->
            case call(Backend, init, [Opts]) of
                {ok, BS} -> {ok, BS};
                {error, Reason} -> {error, Reason};
                Other -> {error, {bad_return, Other}}
            end;
        {error, What} ->
            {error, {no_backend_module, Backend, What}}
    end.

%% A crash in a backend must not kill the server: with the ETS backend the
%% table belongs to this process and would vanish with it.
call(M, F, A) ->
    try
        apply(M, F, A)
    catch
        Class:Reason:Stack ->
            logger:error("~p:~p crashed: ~p:~p ~p", [M, F, Class, Reason, Stack]),
            {error, {crashed, Class, Reason}}
    end.

maybe_terminate(B, Reason, BS) ->
    case erlang:function_exported(B, terminate, 2) of
        true -> call(B, terminate, [Reason, BS]);
        false -> ok
    end.

%% Close every DETS table this server opened (a table opened n times by one
%% process needs n closes) so the files are clean for the next start.
%% dets:info(T, users) lists the opening processes (undocumented but stable).
close_own_dets() ->
    Me = self(),
    lists:foreach(
      fun(T) ->
              Users = try dets:info(T, users) catch _:_ -> [] end,
              [_ = dets:close(T) || U <- lists:flatten([Users]), U =:= Me]
      end, dets:all()).

schedule(S = #{interval := infinity}) ->
    S;
schedule(S = #{interval := I}) when is_integer(I), I > 0 ->
    S#{timer := erlang:send_after(I, self(), cleanup_expired)}.

env(K, Default) ->
    case env_find(K) of
        {ok, V} -> V;
        undefined -> Default
    end.

env_find(K) ->
    %% A sys.config block applies once its application is loaded (the
    %% fixture ships an empty erlmcp_core.app for that).
    _ = application:load(erlmcp_core),
    case application:get_env(erlmcp_core, K) of
        {ok, V} -> {ok, V};
        undefined -> application:get_env(erlmcp_fixture, K)
    end.

to_map(M) when is_map(M) -> M;
to_map(L) when is_list(L) -> maps:from_list(proplists:unfold(L)).
