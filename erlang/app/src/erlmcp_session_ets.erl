%% @doc ETS session backend, data-compatible with erlmcp's
%% erlmcp_session_ets: a public named `ordered_set' (default
%% `erlmcp_sessions_ets', option `table_name') holding `{SessionId, Session}'.
%% The table belongs to the process that calls init/1 (the store server).
-module(erlmcp_session_ets).
-behaviour(erlmcp_session_backend).

-export([init/1, store/3, fetch/2, delete/2, list/1, cleanup_expired/1]).

init(Opts) ->
    Name = maps:get(table_name, Opts, erlmcp_sessions_ets),
    case ets:whereis(Name) of
        undefined ->
            _ = ets:new(Name, [ordered_set, public, named_table,
                               {read_concurrency, true},
                               {write_concurrency, true}]),
            ok;
        _ ->
            ok
    end,
    {ok, #{table_name => Name}}.

store(Id, Session, #{table_name := T} = State) ->
    try ets:insert(T, {Id, Session}) of
        true -> {ok, State}
    catch
        error:Reason -> {error, Reason}
    end.

fetch(Id, #{table_name := T} = State) ->
    try ets:lookup(T, Id) of
        [{Id, Session}] ->
            %% A read is a write: erlmcp stores the new last_accessed.
            Updated = Session#{last_accessed => erlmcp_session_backend:now_ms()},
            true = ets:insert(T, {Id, Updated}),
            {ok, Updated, State};
        [] ->
            {error, not_found, State}
    catch
        error:Reason -> {error, Reason, State}
    end.

delete(Id, #{table_name := T} = State) ->
    try ets:delete(T, Id) of
        true -> {ok, State}
    catch
        error:Reason -> {error, Reason, State}
    end.

list(#{table_name := T} = State) ->
    {ok, ets:select(T, [{{'$1', '_'}, [], ['$1']}]), State}.

cleanup_expired(#{table_name := T} = State) ->
    Now = erlmcp_session_backend:now_ms(),
    Guard = erlmcp_session_backend:expired_guard('$2', Now),
    %% select_delete tests and deletes each row atomically, so a session
    %% refreshed by a concurrent fetch is not removed.
    N = ets:select_delete(T, [{{'_', '$2'}, [Guard], [true]}]),
    {ok, N, State}.
