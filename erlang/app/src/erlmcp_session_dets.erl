%% @doc DETS session backend, data-compatible with erlmcp's
%% erlmcp_session_dets: a `set' table (default name `erlmcp_sessions_dets',
%% file `erlmcp_sessions.dets', `auto_save' 60000 ms) of `{SessionId, Session}'.
%%
%% Options: `table_name', `file_path', `auto_save' as in erlmcp; also
%% `dets_dir' (the runbook's key: the file goes to DIR/erlmcp_sessions.dets
%% unless `file_path' is given) and `min_no_slots' (only used when the file
%% is created; makes big fills faster). The table stays open as long as the
%% process that called init/1 (the store server) lives.
-module(erlmcp_session_dets).
-behaviour(erlmcp_session_backend).

-export([init/1, store/3, fetch/2, delete/2, list/1, cleanup_expired/1]).
-export([open_opts/1]).

init(Opts) ->
    {Name, File, OpenOpts} = open_opts(Opts),
    ok = filelib:ensure_dir(File),
    case dets:open_file(Name, OpenOpts) of
        {ok, Name} ->
            {ok, #{table_name => Name, file_path => File,
                   auto_save => proplists:get_value(auto_save, OpenOpts)}};
        {error, Reason} ->
            {error, Reason}
    end.

%% @doc Table name, file and dets:open_file/2 options for backend options.
%% Shared with the seeder so both open the file the same way.
-spec open_opts(map()) -> {atom(), file:filename(), [tuple()]}.
open_opts(Opts) ->
    Name = maps:get(table_name, Opts, erlmcp_sessions_dets),
    File = case maps:find(file_path, Opts) of
               {ok, F} -> to_list(F);
               error ->
                   case maps:find(dets_dir, Opts) of
                       {ok, Dir} -> filename:join(to_list(Dir), "erlmcp_sessions.dets");
                       error -> "erlmcp_sessions.dets"
                   end
           end,
    Slots = case maps:find(min_no_slots, Opts) of
                {ok, N} when is_integer(N), N > 0 -> [{min_no_slots, N}];
                _ -> []
            end,
    {Name, File, [{file, File}, {type, set}, {access, read_write},
                  {auto_save, maps:get(auto_save, Opts, 60000)} | Slots]}.

store(Id, Session, #{table_name := T} = State) ->
    case dets:insert(T, {Id, Session}) of
        ok -> {ok, State};
        {error, Reason} -> {error, Reason}
    end.

fetch(Id, #{table_name := T} = State) ->
    case dets:lookup(T, Id) of
        [{Id, Session}] ->
            Updated = Session#{last_accessed => erlmcp_session_backend:now_ms()},
            case dets:insert(T, {Id, Updated}) of
                ok -> {ok, Updated, State};
                {error, Reason} -> {error, Reason, State}
            end;
        [] ->
            {error, not_found, State};
        {error, Reason} ->
            {error, Reason, State}
    end.

delete(Id, #{table_name := T} = State) ->
    case dets:delete(T, Id) of
        ok -> {ok, State};
        {error, Reason} -> {error, Reason, State}
    end.

list(#{table_name := T} = State) ->
    case dets:select(T, [{{'$1', '_'}, [], ['$1']}]) of
        Ids when is_list(Ids) -> {ok, lists:usort(Ids), State};
        {error, Reason} -> {error, Reason, State}
    end.

cleanup_expired(#{table_name := T} = State) ->
    Guard = erlmcp_session_backend:expired_guard('$2', erlmcp_session_backend:now_ms()),
    case dets:select_delete(T, [{{'_', '$2'}, [Guard], [true]}]) of
        N when is_integer(N) -> {ok, N, State};
        {error, _} -> {ok, 0, State}
    end.

to_list(B) when is_binary(B) -> binary_to_list(B);
to_list(A) when is_atom(A) -> atom_to_list(A);
to_list(L) when is_list(L) -> L.
