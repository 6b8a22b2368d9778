%% @doc Mnesia session backend, data-compatible with erlmcp's
%% erlmcp_session_mnesia: a `set' table (default `erlmcp_session') of records
%% `{TableName, SessionId, Session, LastAccessed}', attributes
%% `[session_id, session_data, last_accessed]'. The record tag is the table
%% name, as in erlmcp.
%%
%% Options: `table_name'; `nodes' (the runbook's `mnesia_nodes' is accepted
%% too; default `[node()]'); `disc_copies' (default true, except on
%% `nonode@nohost' where it defaults to false, i.e. `ram_copies');
%% `wait_timeout' for wait_for_tables (default 30000 ms).
%%
%% Mnesia must already be running with a schema (disc schema for
%% disc_copies) on every node in `nodes': this module never creates a schema.
%% The table is created when missing, as erlmcp does.
-module(erlmcp_session_mnesia).
-behaviour(erlmcp_session_backend).

-export([init/1, store/3, fetch/2, delete/2, list/1, cleanup_expired/1]).

-define(ATTRS, [session_id, session_data, last_accessed]).

init(Opts) ->
    T = maps:get(table_name, Opts, erlmcp_session),
    Nodes = maps:get(nodes, Opts, maps:get(mnesia_nodes, Opts, [node()])),
    Disc = maps:get(disc_copies, Opts, node() =/= nonode@nohost),
    State = #{table_name => T, nodes => Nodes, disc_copies => Disc},
    case mnesia:system_info(is_running) of
        yes ->
            Copies = case Disc of
                         true -> [{disc_copies, Nodes}];
                         false -> [{ram_copies, Nodes}]
                     end,
            case mnesia:create_table(T, [{attributes, ?ATTRS}, {type, set} | Copies]) of
                {atomic, ok} ->
                    logger:info("Created Mnesia table: ~p", [T]),
                    wait(T, State, Opts);
                %% erlmcp matches {atomic, {already_exists, _}}, which mnesia
                %% never returns; a restart must accept the existing table.
                {aborted, {already_exists, T}} ->
                    wait(T, State, Opts);
                {aborted, Reason} ->
                    {error, Reason}
            end;
        Other ->
            {error, {mnesia_not_running, node(), Other}}
    end.

wait(T, State, Opts) ->
    case mnesia:wait_for_tables([T], maps:get(wait_timeout, Opts, 30000)) of
        ok -> {ok, State};
        {timeout, _} -> {error, {timeout, wait_for_tables, T}};
        {error, Reason} -> {error, Reason}
    end.

store(Id, Session, #{table_name := T} = State) ->
    Rec = {T, Id, Session, erlmcp_session_backend:now_ms()},
    case mnesia:transaction(fun() -> mnesia:write(T, Rec, write) end) of
        {atomic, ok} -> {ok, State};
        {aborted, Reason} -> {error, Reason}
    end.

fetch(Id, #{table_name := T} = State) ->
    F = fun() ->
                case mnesia:read(T, Id, write) of
                    [{T, Id, Session, _}] ->
                        Now = erlmcp_session_backend:now_ms(),
                        Updated = Session#{last_accessed => Now},
                        ok = mnesia:write(T, {T, Id, Updated, Now}, write),
                        {ok, Updated};
                    [] ->
                        {error, not_found}
                end
        end,
    case mnesia:transaction(F) of
        {atomic, {ok, Session}} -> {ok, Session, State};
        {atomic, {error, not_found}} -> {error, not_found, State};
        {aborted, Reason} -> {error, Reason, State}
    end.

delete(Id, #{table_name := T} = State) ->
    case mnesia:transaction(fun() -> mnesia:delete(T, Id, write) end) of
        {atomic, ok} -> {ok, State};
        {aborted, Reason} -> {error, Reason, State}
    end.

list(#{table_name := T} = State) ->
    case mnesia:transaction(fun() -> mnesia:all_keys(T) end) of
        {atomic, Ids} -> {ok, Ids, State};
        {aborted, Reason} -> {error, Reason, State}
    end.

%% Finds candidates with a dirty select (no lock on every row, unlike
%% erlmcp's full read in one transaction) and deletes them in one
%% transaction that checks each row again, so a session refreshed in
%% between survives.
cleanup_expired(#{table_name := T} = State) ->
    Now = erlmcp_session_backend:now_ms(),
    Guard = erlmcp_session_backend:expired_guard('$2', Now),
    try mnesia:dirty_select(T, [{{T, '$1', '$2', '_'}, [Guard], ['$1']}]) of
        [] ->
            {ok, 0, State};
        Ids ->
            F = fun() ->
                        lists:foldl(
                          fun(Id, N) ->
                                  case mnesia:read(T, Id, write) of
                                      [{T, Id, S, _}] ->
                                          case erlmcp_session_backend:is_expired(S, Now) of
                                              true -> ok = mnesia:delete(T, Id, write), N + 1;
                                              false -> N
                                          end;
                                      [] ->
                                          N
                                  end
                          end, 0, Ids)
                end,
            case mnesia:transaction(F) of
                {atomic, N} -> {ok, N, State};
                {aborted, _} -> {ok, 0, State}
            end
    catch
        exit:_ -> {ok, 0, State}
    end.
